/**
 * The part of npm ssh2's API that ssh_remote_host.ts uses, typed by hand.
 *
 * Hand-written because @types/ssh2 depends on @types/node 18, and with it in the graph
 * `deno check .` sees two versions of Node's types and fails in unrelated modules (node:http
 * servers' overloads). Kept to what we call; see ssh2 1.17's README for the full contract.
 */
import type { Buffer } from "node:buffer";
import type { EventEmitter } from "node:events";
import type { Duplex, Readable } from "node:stream";

export type ServerHostKeyAlgorithm =
  | "ssh-ed25519"
  | "ecdsa-sha2-nistp256"
  | "ecdsa-sha2-nistp384"
  | "ecdsa-sha2-nistp521"
  | "rsa-sha2-512"
  | "rsa-sha2-256"
  | "ssh-rsa"
  | "ssh-dss";

/** Algorithm preferences; only `serverHostKey` is used here. */
export interface Algorithms {
  serverHostKey?: ServerHostKeyAlgorithm[] | {
    append?: ServerHostKeyAlgorithm[];
    prepend?: ServerHostKeyAlgorithm[];
    remove?: ServerHostKeyAlgorithm[];
  };
}

export interface ConnectConfig {
  host: string;
  port: number;
  username: string;
  privateKey: Buffer;
  passphrase?: string;
  authHandler?: string[];
  hostVerifier?: (key: Buffer) => boolean;
  algorithms?: Algorithms;
  readyTimeout?: number;
  keepaliveInterval?: number;
  keepaliveCountMax?: number;
}

/** An exec channel: stdout as the stream itself, stderr beside it. */
export interface ClientChannel extends Duplex {
  stderr: Readable;
  close(): void;
  on(event: "exit", listener: (code: number | null, signalName?: string) => void): this;
  // deno-lint-ignore no-explicit-any
  on(event: string, listener: (...args: any[]) => void): this;
}

export interface TransferOptions {
  mode?: number;
  chunkSize?: number;
  concurrency?: number;
}

export interface SFTPWrapper extends EventEmitter {
  fastPut(local: string, remote: string, opts: TransferOptions, cb: (err?: Error) => void): void;
  open(
    path: string,
    flags: string,
    attrs: { mode?: number },
    cb: (err: Error | undefined | null, handle: Buffer) => void,
  ): void;
  fchmod(handle: Buffer, mode: number, cb: (err: Error | undefined | null) => void): void;
  write(
    handle: Buffer,
    buf: Buffer,
    offset: number,
    length: number,
    position: number,
    cb: (err: Error | undefined | null) => void,
  ): void;
  close(handle: Buffer, cb: (err: Error | undefined | null) => void): void;
  end(): void;
}

export class Client extends EventEmitter {
  connect(config: ConnectConfig): this;
  exec(command: string, cb: (err: Error | undefined, channel: ClientChannel) => void): this;
  sftp(cb: (err: Error | undefined, sftp: SFTPWrapper) => void): this;
  end(): this;
  destroy(): this;
}

/** A parsed private or public key. */
export interface ParsedKey {
  type: string;
  comment: string;
  isPrivateKey(): boolean;
  getPublicSSH(): Buffer;
}

export const utils: {
  parseKey(data: Buffer | string, passphrase?: string): ParsedKey | ParsedKey[] | Error;
};
