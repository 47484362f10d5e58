/**
 * {@link RemoteHost} over SSH with npm ssh2 (pure JavaScript here: its native
 * addons are not built), public-key login only, with mandatory host key
 * verification against an expected key or an OpenSSH known_hosts file.
 *
 * Permissions (the "ops" set has them): read of the key and known_hosts
 * files and of uploaded files, net to the device, env for HOME when no
 * known_hosts file is named.
 */
import { Buffer } from "node:buffer";
import { constants as osConstants } from "node:os";
// @ts-types="./ssh2.d.ts"
import { Client, type ClientChannel, type SFTPWrapper, utils } from "ssh2";
import {
  AranyaError,
  CanceledError,
  errorMessage,
  ForbiddenError,
  InvalidInputError,
  NotFoundError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { RemoteHost, RemoteResult } from "./remote_host.ts";

import { type HostKeyCheck, hostKeyCheck } from "./host_key_policy.ts";
/** Where and how to log in. */
export interface SshTarget {
  /** Host name or IP address of the device. */
  host: string;
  port: number;
  user: string;
  /** OpenSSH or PEM private key file. */
  privateKeyFile: string;
  /** For an encrypted private key. */
  passphrase?: string;
  /**
   * OpenSSH known_hosts file to check the host key against. Default, when
   * `hostKey` is not given either: `$HOME/.ssh/known_hosts`.
   */
  knownHostsFile?: string;
  /**
   * The expected host key: a public key line "ssh-ed25519 AAAA..." or its
   * fingerprint "SHA256:<base64>" as `ssh-keygen -l` prints it. When given
   * with `knownHostsFile`, a key matching either is accepted.
   */
  hostKey?: string;
  /** Time for TCP connect, handshake and login, in ms. Default 20000. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 20_000;
/** SSH keepalives: a vanished device fails pending calls after about 45 s. */
const KEEPALIVE_INTERVAL_MS = 15_000;
const KEEPALIVE_COUNT_MAX = 3;
/**
 * Uploads (ssh2's fastPut): 128 KiB reads, 16 in flight (2 MiB buffered);
 * ssh2 splits each into writes the server accepts. Measured against local
 * OpenSSH, this beat 32 KiB x 64.
 */
const UPLOAD_CHUNK = 128 * 1024;
const UPLOAD_CONCURRENCY = 16;
/** writeFile's SFTP write size (small files, one write in flight). */
const WRITE_CHUNK = 32 * 1024;
/** SFTP status codes (draft-ietf-secsh-filexfer-02). */
const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;

/**
 * Connects and logs in to `o.host` with the private key, checking the host
 * key first. Resolves once logged in; the caller owns the returned host and
 * must `close()` it.
 *
 * Rejects with InvalidInputError (bad target, unreadable or unusable key or
 * known_hosts file), UnauthenticatedError (host key unknown, changed or
 * revoked; login refused), UnavailableError (connection refused or lost,
 * name not resolved), TimeoutError (no login within `timeoutMs`),
 * CanceledError (`signal` aborted). Each message names the device address.
 */
export async function connectSsh(o: SshTarget, signal?: AbortSignal): Promise<RemoteHost> {
  const address = hostPort(o.host, o.port);
  validateTarget(o, address);
  const privateKey = await readPrivateKey(o, address);
  const check = await hostKeyCheck(o, address);
  if (signal?.aborted) throw new CanceledError(`Connecting to device "${address}" was canceled`);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  const client = new Client();
  const label = `${o.user}@${address}`;
  return await new Promise<RemoteHost>((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      client.removeListener("ready", onReady);
      client.removeListener("error", onError);
      client.removeListener("close", onClose);
      if (err) {
        // Swallow the errors a torn-down client may still emit.
        client.on("error", () => {});
        client.destroy();
        reject(err);
      }
    };
    const onReady = () => {
      // Built at once so that its error listener is in place before ours goes.
      const host = new Ssh2RemoteHost(client, label);
      finish();
      resolve(host);
    };
    const onError = (err: Error & { level?: string; code?: string }) => {
      finish(connectError(err, o, address, check, timeoutMs));
    };
    const onClose = () => {
      finish(
        check.failure() ??
          new UnavailableError(`Device "${address}" closed the SSH connection during login`),
      );
    };
    const onAbort = () => {
      finish(new CanceledError(`Connecting to device "${address}" was canceled`));
    };
    const timer = setTimeout(() => {
      finish(
        new TimeoutError(
          `Device "${address}" did not complete the SSH connection and login within ` +
            `${timeoutMs / 1000} s`,
        ),
      );
    }, timeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    client.on("ready", onReady).on("error", onError).on("close", onClose);
    try {
      client.connect({
        host: o.host,
        port: o.port,
        username: o.user,
        privateKey,
        passphrase: o.passphrase,
        authHandler: ["publickey"],
        hostVerifier: (key: Buffer) => check.verify(key),
        algorithms: check.algorithms,
        // Our own timer covers DNS, TCP, handshake and login together.
        readyTimeout: 0,
        keepaliveInterval: KEEPALIVE_INTERVAL_MS,
        keepaliveCountMax: KEEPALIVE_COUNT_MAX,
      });
    } catch (err) {
      finish(new InvalidInputError(`Cannot connect to device "${address}": ${errorMessage(err)}`));
    }
  });
}

/** A logged-in ssh2 Client as a {@link RemoteHost}. Built by {@link connectSsh}. */
export class Ssh2RemoteHost implements RemoteHost {
  readonly label: string;
  readonly #client: Client;
  /** Why the connection is gone ("the connection was lost"); every later call fails with it. */
  #gone?: string;
  #closing = false;
  readonly #closed: Promise<void>;
  #sftp?: Promise<SFTPWrapper>;
  /** Failers of the calls in flight, called together when the connection goes. */
  readonly #pending = new Set<() => void>();

  /** Takes ownership of `client`, which must be ready (logged in). */
  constructor(client: Client, label: string) {
    this.#client = client;
    this.label = label;
    this.#closed = new Promise((resolve) => client.once("close", () => resolve()));
    client.on("error", (err: Error) => this.#lost(`the connection failed: ${err.message}`));
    client.on("close", () => {
      this.#lost(this.#closing ? "the connection was closed" : "the connection was lost");
    });
  }

  exec(
    command: string,
    opts: { stdin?: Uint8Array; signal?: AbortSignal } = {},
  ): Promise<RemoteResult> {
    const what = `Command "${brief(command)}" on "${this.label}"`;
    return this.#track<RemoteResult>(what, (reject, done) => {
      if (opts.signal?.aborted) return reject(new CanceledError(`${what} was canceled`));
      this.#client.exec(command, (err, ch) => {
        if (err) return reject(new UnavailableError(`${what} could not start: ${err.message}`));
        const out: Buffer[] = [];
        const errs: Buffer[] = [];
        let code = -1;
        const onAbort = () => {
          sendSignal(ch, "KILL");
          ch.close();
          reject(new CanceledError(`${what} was canceled`));
        };
        if (opts.signal?.aborted) return onAbort();
        opts.signal?.addEventListener("abort", onAbort, { once: true });
        ch.on("data", (d: Buffer) => out.push(d));
        ch.stderr.on("data", (d: Buffer) => errs.push(d));
        ch.on("exit", (status: number | null, signalName?: string) => {
          code = status ?? signalCode(signalName);
        });
        ch.on("close", () => {
          opts.signal?.removeEventListener("abort", onAbort);
          // A channel closed by a dropped connection is not a finished command.
          if (this.#gone) return reject(this.#goneError(what));
          done({
            code,
            stdout: Buffer.concat(out).toString("utf8"),
            stderr: Buffer.concat(errs).toString("utf8"),
          });
        });
        writeStdin(ch, opts.stdin);
      });
    });
  }

  upload(localPath: string, remotePath: string, mode: number): Promise<void> {
    const what = `Upload of "${localPath}" to "${remotePath}" on "${this.label}"`;
    return this.#track<void>(what, async (reject, done) => {
      try {
        const info = await Deno.stat(localPath);
        if (!info.isFile) {
          return reject(new InvalidInputError(`${what} failed: the local path is not a file`));
        }
      } catch (err) {
        const cls = err instanceof Deno.errors.NotFound ? NotFoundError : InvalidInputError;
        return reject(new cls(`${what} failed: ${errorMessage(err)}`, { cause: err }));
      }
      const sftp = await this.#sftpSession(what);
      sftp.fastPut(
        localPath,
        remotePath,
        { mode, chunkSize: UPLOAD_CHUNK, concurrency: UPLOAD_CONCURRENCY },
        (err) => err ? reject(sftpError(what, remotePath, err)) : done(),
      );
    });
  }

  writeFile(remotePath: string, data: Uint8Array, mode: number): Promise<void> {
    const what = `Writing "${remotePath}" on "${this.label}"`;
    return this.#track<void>(what, async (reject, done) => {
      const sftp = await this.#sftpSession(what);
      try {
        const handle = await call<Buffer>((cb) => sftp.open(remotePath, "w", { mode }, cb));
        try {
          // open() applies the mode only to a new file; an existing one keeps its own.
          await call((cb) => sftp.fchmod(handle, mode, cb));
          const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
          for (let off = 0; off < buf.length; off += WRITE_CHUNK) {
            const len = Math.min(WRITE_CHUNK, buf.length - off);
            await call((cb) => sftp.write(handle, buf, off, len, off, cb));
          }
        } finally {
          await call((cb) => sftp.close(handle, cb)).catch(() => {});
        }
        done();
      } catch (err) {
        reject(sftpError(what, remotePath, err));
      }
    });
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#client.end();
      const timer = setTimeout(() => this.#client.destroy(), 5_000);
      await this.#closed;
      clearTimeout(timer);
    }
    await this.#closed;
  }

  /** The shared SFTP channel, opened on first use and again after it closes. */
  #sftpSession(what: string): Promise<SFTPWrapper> {
    if (!this.#sftp) {
      const p = new Promise<SFTPWrapper>((resolve, reject) => {
        this.#client.sftp((err, sftp) => {
          if (err) {
            return reject(
              new UnavailableError(`${what} failed: no SFTP session: ${err.message}`, {
                cause: err,
              }),
            );
          }
          sftp.on("close", () => {
            if (this.#sftp === p) this.#sftp = undefined;
          });
          resolve(sftp);
        });
      });
      p.catch(() => {
        if (this.#sftp === p) this.#sftp = undefined;
      });
      this.#sftp = p;
    }
    return this.#sftp;
  }

  /**
   * Runs one call described by `what` so that it also fails when the
   * connection goes, and fails at once when it already has. Errors thrown by
   * `body` reject the call; once the connection is gone every failure becomes
   * the connection's.
   */
  #track<T>(
    what: string,
    body: (reject: (err: Error) => void, done: (value: T) => void) => void | Promise<void>,
  ): Promise<T> {
    if (this.#gone || this.#closing) {
      return Promise.reject(this.#goneError(what));
    }
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = () => {
        settled = true;
        this.#pending.delete(onGone);
      };
      const fail = (err: Error) => {
        if (settled) return;
        settle();
        reject(this.#gone && !(err instanceof CanceledError) ? this.#goneError(what) : err);
      };
      const onGone = () => fail(this.#goneError(what));
      const done = (value: T) => {
        if (settled) return;
        settle();
        resolve(value);
      };
      this.#pending.add(onGone);
      Promise.resolve()
        .then(() => body(fail, done))
        .catch((err) => fail(err instanceof Error ? err : new Error(String(err))));
    });
  }

  #goneError(what: string): UnavailableError {
    return new UnavailableError(`${what} failed: ${this.#gone ?? "the connection was closed"}`);
  }

  #lost(reason: string): void {
    this.#gone ??= reason;
    for (const onGone of [...this.#pending]) onGone();
  }
}

/** A command shortened for messages. */
function brief(command: string): string {
  const line = command.replace(/\s+/g, " ").trim();
  return line.length <= 80 ? line : `${line.slice(0, 77)}...`;
}

/** "host:port", or "[v6addr]:port". */
function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

function validateTarget(o: SshTarget, address: string): void {
  if (!o.host || /\s/.test(o.host)) {
    throw new InvalidInputError(`SSH host "${o.host}" is not a host name or address`);
  }
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) {
    throw new InvalidInputError(`SSH port ${o.port} of device "${o.host}" is not in 1..65535`);
  }
  if (!o.user) throw new InvalidInputError(`SSH user for device "${address}" is empty`);
  if (o.timeoutMs !== undefined && !(o.timeoutMs > 0)) {
    throw new InvalidInputError(
      `SSH timeout ${o.timeoutMs} ms for device "${address}" is not positive`,
    );
  }
}

async function readPrivateKey(o: SshTarget, address: string): Promise<Buffer> {
  let data: Uint8Array;
  try {
    data = await Deno.readFile(o.privateKeyFile);
  } catch (err) {
    throw new InvalidInputError(
      `Cannot read SSH private key "${o.privateKeyFile}" for device "${address}": ` +
        errorMessage(err),
      { cause: err },
    );
  }
  const key = Buffer.from(data);
  const parsed = utils.parseKey(key, o.passphrase);
  if (parsed instanceof Error) {
    throw new InvalidInputError(
      `SSH private key "${o.privateKeyFile}" for device "${address}" is not usable: ` +
        parsed.message,
    );
  }
  return key;
}

/** Maps an ssh2 error during connect and login to a domain error naming the device. */
function connectError(
  err: Error & { level?: string; code?: string },
  o: SshTarget,
  address: string,
  check: HostKeyCheck,
  timeoutMs: number,
): Error {
  const refused = check.failure();
  if (refused) return refused;
  if (err.level === "client-authentication") {
    return new UnauthenticatedError(
      `Device "${address}" refused the login of user "${o.user}" with key ` +
        `"${o.privateKeyFile}"; check that its public key is in that user's authorized_keys`,
      { cause: err },
    );
  }
  if (err.level === "client-timeout") {
    return new TimeoutError(
      `Device "${address}" did not complete the SSH connection and login within ` +
        `${timeoutMs / 1000} s`,
      { cause: err },
    );
  }
  switch (err.code) {
    case "ECONNREFUSED":
      return new UnavailableError(
        `Cannot connect to device "${address}": connection refused (is sshd listening on ` +
          `port ${o.port}?)`,
        { cause: err },
      );
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new UnavailableError(
        `Cannot connect to device "${address}": host name "${o.host}" does not resolve`,
        { cause: err },
      );
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return new UnavailableError(
        `Cannot connect to device "${address}": ${err.code} (device offline or unreachable?)`,
        { cause: err },
      );
  }
  return new UnavailableError(`Cannot connect to device "${address}": ${err.message}`, {
    cause: err,
  });
}

/** 128 + the signal's number (as shells report it), or -1 for an unknown signal. */
function signalCode(name: string | undefined): number {
  if (!name) return -1;
  const signals = osConstants.signals as Record<string, number | undefined>;
  const n = signals[name.startsWith("SIG") ? name : `SIG${name}`];
  return n === undefined ? -1 : 128 + n;
}

function writeStdin(ch: ClientChannel, stdin: Uint8Array | undefined): void {
  if (stdin && stdin.length > 0) {
    ch.end(Buffer.from(stdin.buffer, stdin.byteOffset, stdin.byteLength));
  } else {
    ch.end();
  }
}

/**
 * Sends signal `name` (without "SIG") to the remote command. ssh2's public
 * `signal()` does nothing once stdin is closed (the stream is no longer
 * writable), though SSH allows it until the channel closes, so this calls
 * one level down (ssh2 1.17 internals; a no-op if they change).
 */
function sendSignal(ch: ClientChannel, name: string): void {
  const c = ch as unknown as {
    outgoing?: { id?: number; state?: string };
    _client?: { _protocol?: { signal?: (id: number, name: string) => void } };
  };
  const id = c.outgoing?.id;
  const state = c.outgoing?.state;
  if (id === undefined || (state !== "open" && state !== "eof")) return;
  try {
    c._client?._protocol?.signal?.(id, name);
  } catch { /* closing the channel still ends our side */ }
}

/** An SFTP failure as a domain error; `what` says what failed. */
function sftpError(what: string, remotePath: string, err: unknown): Error {
  if (err instanceof AranyaError) return err;
  const code = (err as { code?: unknown }).code;
  const msg = errorMessage(err);
  if (code === SFTP_NO_SUCH_FILE) {
    const dir = remotePath.includes("/") ? remotePath.replace(/\/[^/]*$/, "") || "/" : ".";
    return new NotFoundError(`${what} failed: ${msg} (does the folder "${dir}" exist?)`, {
      cause: err,
    });
  }
  if (code === SFTP_PERMISSION_DENIED) {
    return new ForbiddenError(`${what} failed: ${msg}`, { cause: err });
  }
  return new UnavailableError(`${what} failed: ${msg}`, { cause: err });
}

/** Adapts a Node-style callback call to a promise. */
function call<T = void>(
  fn: (cb: (err: Error | undefined | null, value: T) => void) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => err ? reject(err) : resolve(value));
  });
}
