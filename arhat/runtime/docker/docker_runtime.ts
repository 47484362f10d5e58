/**
 * `ContainerRuntime` over the Docker Engine API, for dockerd and Podman's
 * compatible service alike. Requests go through fetch with an HttpClient
 * bound to the engine's Unix socket (the URL host `d` is a placeholder);
 * exec and attach use hijacked connections (`hijack.ts`) and the
 * multiplexed stream format (`demux.ts`). Every engine failure is mapped to
 * a domain error in one place (`engine_error.ts`).
 *
 * Differences between the engines that this module absorbs:
 * - Podman answers most failures with 500 and a message (a taken name, a
 *   missing object, exec in a stopped container), dockerd with 404/409.
 * - A pull refused by the registry is a 500 from dockerd but an `error` line
 *   inside a 200 progress stream from Podman.
 * - Podman may report an exited container as "stopped" (mapped to "exited").
 * - Podman fails a whole container list when one container is removed while
 *   it lists ("container not known"); the list is asked again.
 *
 * Differences it does not hide (callers must allow for them):
 * - Waiting for a never-started container: dockerd says 0 at once, Podman -1.
 * - Podman refuses to remove a container that others joined (network, IPC,
 *   PID namespace) until they are removed (InvalidInputError); dockerd
 *   removes it. Remove a pod's app containers before its infra container.
 * - With network "none" Podman writes no /etc/resolv.conf, ignoring the DNS
 *   settings; dockerd applies them.
 * - Podman gives a non-root user the added capabilities as effective ones;
 *   dockerd only puts them in the bounding set.
 */
import {
  AranyaError,
  CanceledError,
  errorMessage,
  InternalError,
  InvalidInputError,
  NotFoundError,
  TimeoutError,
} from "@aranya/common/errors";
import { deferred } from "@aranya/common/deferred";
import { sleep } from "@aranya/common/backoff";
import { type Logger, nullLogger } from "@aranya/common/log";
import type {
  ContainerInfo,
  ContainerRuntime,
  ContainerSpec,
  ContainerStats,
  ExecOptions,
  ImageInfo,
  LogOptions,
  OutputChunk,
  RegistryCredentials,
  StreamHandle,
} from "../runtime.ts";
import { demuxStream } from "./demux.ts";
import { engineMessage, httpError, transportError } from "./engine_error.ts";
import { hijack, type HijackedConnection } from "./hijack.ts";

import {
  abbreviate,
  createBody,
  enc,
  RawContainer,
  RawImage,
  RawStats,
  time,
  toContainer,
  toEnv,
  toImage,
  toStats,
} from "./docker_spec.ts";
import { checkImageRef, encodeAuth, pullQuery, readProgress } from "./docker_images.ts";
import { lazyStream } from "./lazy_stream.ts";

/** Options for {@link DockerRuntime}. */
export interface DockerRuntimeOptions {
  /** Path of the engine's Unix socket, e.g. "/run/docker.sock" or Podman's. */
  socket: string;
  /** Engine API version prefix; default "v1.41" (dockerd 20.10, Podman 4). */
  apiVersion?: string;
  log?: Logger;
}

/** How long exec's exit code is polled for after its output ended. */
const EXEC_EXIT_POLL_MS = 10_000;
/** Image references: what registries and engines accept, nothing that needs URL escaping. */

interface CallInit {
  json?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Podman's error for a container removed while it built a list (see `#listRetrying`). */
const VANISHED_WHILE_LISTING = /container not known|no such container/i;

/**
 * Docker Engine API client implementing {@link ContainerRuntime}.
 *
 * Contract: the constructor does no I/O; the HTTP client is created on first
 * use and released by {@link close}. Methods follow the interface's
 * contracts; errors are domain errors whose message names the container or
 * image and carries the engine's own text.
 */
export class DockerRuntime implements ContainerRuntime {
  readonly #socket: string;
  readonly #api: string;
  readonly #log: Logger;
  #client: Deno.HttpClient | undefined;

  constructor(opts: DockerRuntimeOptions) {
    this.#socket = opts.socket;
    this.#api = opts.apiVersion ?? "v1.41";
    this.#log = (opts.log ?? nullLogger).with({ component: "docker-runtime", socket: opts.socket });
  }

  /**
   * Releases the HTTP client (call it when done; requests still in flight
   * may fail). A later call creates a new client. Hijacked streams use their
   * own connections and are not affected.
   */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  async version(): Promise<{ name: string; version: string; apiVersion: string }> {
    const v = await this.#call("GET", "/version", "Reading the engine version") as {
      Version?: string;
      ApiVersion?: string;
      Components?: { Name?: string; Version?: string }[] | null;
    };
    const podman = (v.Components ?? []).find((c) => /podman/i.test(c.Name ?? ""));
    return {
      name: podman ? "podman" : "docker",
      version: podman?.Version ?? v.Version ?? "",
      apiVersion: v.ApiVersion ?? "",
    };
  }

  async inspectImage(ref: string): Promise<ImageInfo | undefined> {
    checkImageRef(ref);
    const res = await this.#callAllowing(
      "GET",
      `/images/${ref}/json`,
      `Inspecting image "${ref}"`,
      [
        404,
      ],
    );
    return res.status === 404 ? undefined : toImage(res.data as RawImage);
  }

  async listImages(): Promise<ImageInfo[]> {
    const raw = await this.#call("GET", "/images/json", "Listing images") as RawImage[] | null;
    return (raw ?? []).map(toImage);
  }

  async pullImage(ref: string, credentials?: RegistryCredentials): Promise<ImageInfo> {
    checkImageRef(ref);
    const what = `Pulling image "${ref}"`;
    const headers: Record<string, string> = {};
    if (credentials) headers["x-registry-auth"] = encodeAuth(credentials);
    const res = await this.#fetch("POST", `/images/create?${pullQuery(ref)}`, what, { headers });
    if (!res.ok) throw httpError(what, res.status, engineMessage(await this.#text(res, what)));
    // Read the progress stream to its end: the pull is only complete then, and
    // Podman reports failures as an `error` line inside this 200 response.
    try {
      await readProgress(res.body, what);
    } catch (err) {
      throw err instanceof AranyaError ? err : transportError(what, this.#socket, err);
    }
    const image = await this.inspectImage(ref);
    if (!image) throw new InternalError(`${what} reported success but the image is absent`);
    this.#log.info("image pulled", { image: ref, id: image.id });
    return image;
  }

  async removeImage(ref: string): Promise<void> {
    checkImageRef(ref);
    await this.#callAllowing("DELETE", `/images/${ref}?force=true`, `Removing image "${ref}"`, [
      404,
    ]);
  }

  async ensureVolume(
    name: string,
    opts: { labels: Record<string, string>; tmpfsSizeBytes?: number },
  ): Promise<void> {
    const what = `Creating volume "${name}"`;
    const existing = await this.#callAllowing("GET", `/volumes/${enc(name)}`, what, [404]);
    if (existing.status !== 404) return;
    const create = (o: string[]) =>
      this.#callAllowing("POST", "/volumes/create", what, [409], {
        json: {
          Name: name,
          Driver: "local",
          Labels: opts.labels,
          DriverOpts: opts.tmpfsSizeBytes === undefined
            ? undefined
            : { type: "tmpfs", device: "tmpfs", o: o.join(",") },
        },
      });
    if (!opts.tmpfsSizeBytes) {
      await create(["mode=0777"]);
      return;
    }
    try {
      await create(["mode=0777", `size=${opts.tmpfsSizeBytes}`]);
    } catch (err) {
      // Podman 4 reads "size" as a disk quota option even for tmpfs and refuses it: the tmpfs
      // then has the kernel's default size (half the memory), and the pod's memory limit
      // still bounds what its containers can put there.
      if (!/size/i.test(errorMessage(err))) throw err;
      this.#log.info("the engine refused a tmpfs size; the volume has the default size", {
        volume: name,
        error: errorMessage(err),
      });
      await create(["mode=0777"]);
    }
  }

  async removeVolumes(labels: Record<string, string>): Promise<void> {
    const filters = { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) };
    const q = new URLSearchParams({ filters: JSON.stringify(filters) });
    const r = await this.#call("GET", `/volumes?${q}`, "Listing volumes") as
      | { Volumes?: { Name: string; Labels?: Record<string, string> | null }[] | null }
      | null;
    for (const v of r?.Volumes ?? []) {
      if (!Object.entries(labels).every(([k, x]) => v.Labels?.[k] === x)) continue;
      await this.#callAllowing(
        "DELETE",
        `/volumes/${enc(v.Name)}?force=true`,
        `Removing volume "${v.Name}"`,
        [404],
      );
    }
  }

  async createContainer(spec: ContainerSpec): Promise<string> {
    checkImageRef(spec.image);
    const what = `Creating container "${spec.name}"`;
    const created = await this.#call(
      "POST",
      `/containers/create?${new URLSearchParams({ name: spec.name })}`,
      what,
      { json: createBody(spec) },
    ) as { Id?: string; Warnings?: string[] | null };
    if (!created.Id) throw new InternalError(`${what} failed: the engine returned no id`);
    for (const w of created.Warnings ?? []) {
      this.#log.warn("engine warning on create", { container: spec.name, warning: w });
    }
    return created.Id;
  }

  async startContainer(id: string): Promise<void> {
    await this.#callAllowing("POST", `/containers/${enc(id)}/start`, `Starting container "${id}"`, [
      304,
    ]);
  }

  async stopContainer(id: string, graceSeconds: number): Promise<void> {
    const t = Math.max(0, Math.ceil(graceSeconds));
    await this.#callAllowing(
      "POST",
      `/containers/${enc(id)}/stop?t=${t}`,
      `Stopping container "${id}"`,
      [304],
    );
  }

  async removeContainer(id: string): Promise<void> {
    await this.#callAllowing(
      "DELETE",
      `/containers/${enc(id)}?force=true&v=true`,
      `Removing container "${id}"`,
      [404],
    );
  }

  async inspectContainer(idOrName: string): Promise<ContainerInfo | undefined> {
    const raw = await this.#inspectRaw(idOrName);
    return raw && toContainer(raw);
  }

  async listContainers(labels: Record<string, string> = {}): Promise<ContainerInfo[]> {
    const filters = { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) };
    const q = new URLSearchParams({ all: "true", filters: JSON.stringify(filters) });
    const list = await this.#listRetrying(`/containers/json?${q}`) as { Id: string }[] | null;
    // The summaries lack exit codes and times: inspect each (skipping those removed meanwhile).
    const infos = await Promise.all((list ?? []).map((c) => this.inspectContainer(c.Id)));
    return infos.filter((c): c is ContainerInfo =>
      c !== undefined && Object.entries(labels).every(([k, v]) => c.labels[k] === v)
    );
  }

  /**
   * Podman builds a list from its store and fails the whole list (500 "getting container from
   * store ...: container not known") when one container is removed while it lists; the list
   * asked again a moment later is whole. dockerd never does this. Up to three attempts.
   */
  async #listRetrying(path: string): Promise<unknown> {
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#call("GET", path, "Listing containers");
      } catch (err) {
        if (attempt >= 3 || !VANISHED_WHILE_LISTING.test(errorMessage(err))) throw err;
        await sleep(50 * attempt);
      }
    }
  }

  async waitContainer(id: string, signal?: AbortSignal): Promise<number> {
    const r = await this.#call(
      "POST",
      `/containers/${enc(id)}/wait`,
      `Waiting for container "${id}"`,
      { signal },
    ) as { StatusCode?: number };
    return r.StatusCode ?? -1;
  }

  logs(id: string, opts: LogOptions): ReadableStream<OutputChunk> {
    const what = `Reading the logs of container "${id}"`;
    const q = new URLSearchParams({
      stdout: String(opts.stdout ?? true),
      stderr: String(opts.stderr ?? true),
      follow: String(opts.follow ?? false),
      timestamps: String(opts.timestamps ?? false),
      tail: opts.tail === undefined ? "all" : String(Math.max(0, Math.floor(opts.tail))),
    });
    if (opts.since !== undefined) q.set("since", String(Math.floor(opts.since)));
    return lazyStream(what, opts.signal, async (signal) => {
      const raw = await this.#inspectRaw(id, signal);
      if (!raw) throw new NotFoundError(`${what} failed: no such container`);
      const res = await this.#fetch("GET", `/containers/${enc(id)}/logs?${q}`, what, { signal });
      if (!res.ok) throw httpError(what, res.status, engineMessage(await this.#text(res, what)));
      if (!res.body) return new ReadableStream({ start: (c) => c.close() });
      // With a tty the engine sends raw bytes, without one the multiplexed format.
      return demuxStream(res.body, { tty: raw.Config?.Tty === true });
    });
  }

  /**
   * Runs `opts.cmd` in the container over a hijacked connection. `stdin` is
   * pumped into the process and its end closes the process's stdin; the
   * stream is canceled once the process has ended. `exitCode` resolves after
   * `output` ended, so read `output` to its end or cancel it (canceling
   * discards the rest but still yields the exit code); `close()` or the
   * signal stops everything and rejects a pending `exitCode` with
   * CanceledError, and a process still running then is killed (closing the
   * connection alone leaves it running: the engines do not end an exec whose
   * client went away).
   */
  async exec(id: string, opts: ExecOptions): Promise<StreamHandle> {
    const what = `Executing "${abbreviate(opts.cmd.join(" "))}" in container "${id}"`;
    const tty = opts.tty === true;
    const created = await this.#call("POST", `/containers/${enc(id)}/exec`, what, {
      json: {
        Cmd: opts.cmd,
        Env: opts.env && toEnv(opts.env),
        Tty: tty,
        AttachStdin: opts.stdin !== undefined,
        AttachStdout: opts.stdout ?? true,
        AttachStderr: opts.stderr ?? true,
        WorkingDir: opts.workingDir,
        User: opts.user,
      },
      signal: opts.signal,
    }) as { Id?: string };
    const execId = created.Id;
    if (!execId) throw new InternalError(`${what} failed: the engine returned no exec id`);
    const conn = await hijack({
      socket: this.#socket,
      method: "POST",
      path: `/${this.#api}/exec/${enc(execId)}/start`,
      body: { Detach: false, Tty: tty },
      what,
      signal: opts.signal,
      log: this.#log,
    });
    this.#log.debug("exec started", { container: id, exec: execId });
    return this.#streamHandle(conn, {
      what,
      tty,
      stdin: opts.stdin,
      signal: opts.signal,
      exitCode: () => this.#execExitCode(execId, what),
      resize: (cols, rows) =>
        this.#resize(`/exec/${enc(execId)}/resize`, cols, rows, `Resizing exec "${execId}"`),
      onClosedEarly: () => void this.#killExec(execId, what),
    });
  }

  /**
   * Attaches to the container's main process. The output format follows the
   * container's own tty setting (read from the engine); `opts.tty` is not
   * needed and ignored. `exitCode` is the container's, awaited with
   * `waitContainer` after the output ended.
   */
  async attach(
    id: string,
    opts: { stdin?: ReadableStream<Uint8Array>; tty?: boolean; signal?: AbortSignal },
  ): Promise<StreamHandle> {
    const what = `Attaching to container "${id}"`;
    const raw = await this.#inspectRaw(id, opts.signal);
    if (!raw) throw new NotFoundError(`${what} failed: no such container`);
    const tty = raw.Config?.Tty === true;
    const q = new URLSearchParams({
      stream: "1",
      stdin: opts.stdin ? "1" : "0",
      stdout: "1",
      stderr: "1",
    });
    const conn = await hijack({
      socket: this.#socket,
      method: "POST",
      path: `/${this.#api}/containers/${enc(raw.Id)}/attach?${q}`,
      what,
      signal: opts.signal,
      log: this.#log,
    });
    return this.#streamHandle(conn, {
      what,
      tty,
      stdin: opts.stdin,
      signal: opts.signal,
      exitCode: () => this.waitContainer(raw.Id),
      resize: (cols, rows) => this.resizeContainer(raw.Id, cols, rows),
    });
  }

  async resizeContainer(id: string, cols: number, rows: number): Promise<void> {
    await this.#resize(`/containers/${enc(id)}/resize`, cols, rows, `Resizing container "${id}"`);
  }

  /**
   * `GET /containers/{id}/stats?stream=false&one-shot=true`: one reading,
   * without dockerd's wait for a second sample (both engines accept
   * `one-shot`). The working set is usage minus inactive file pages, as the
   * kubelet and cadvisor compute it: `inactive_file` on cgroup v2,
   * `total_inactive_file` on v1. Podman reports no breakdown (its usage
   * excludes them on cgroup v2, not on v1), so there the working set is its
   * usage. A stopped container gets an empty body from
   * Podman and a zero read time from dockerd: both are InvalidInputError.
   */
  async stats(id: string): Promise<ContainerStats> {
    const what = `Reading the stats of container "${id}"`;
    const raw = await this.#call(
      "GET",
      `/containers/${enc(id)}/stats?stream=false&one-shot=true`,
      what,
    ) as RawStats | undefined;
    const timeMs = raw?.read && time(raw.read) ? Date.parse(raw.read) : NaN;
    if (!raw || Number.isNaN(timeMs)) {
      throw new InvalidInputError(`${what} failed: it is not running`);
    }
    return toStats(raw, timeMs);
  }

  // --- streams -------------------------------------------------------------

  /**
   * Wraps a hijacked connection: demultiplexed output, stdin pumped into the
   * connection and half-closed at its end, and the exit code once the output
   * ended. Canceling `output` keeps draining the connection in the
   * background so `exitCode` still resolves; `close()` (or the signal) ends
   * everything and rejects a pending `exitCode` with CanceledError.
   */
  #streamHandle(conn: HijackedConnection, o: {
    what: string;
    tty: boolean;
    stdin?: ReadableStream<Uint8Array>;
    signal?: AbortSignal;
    exitCode: () => Promise<number>;
    resize: (cols: number, rows: number) => Promise<void>;
    /** Called when the caller closed the handle before the output ended. */
    onClosedEarly?: () => void;
  }): StreamHandle {
    const exit = deferred<number>();
    exit.promise.catch(() => {}); // callers need not await it; they still see the rejection
    let closedByCaller = false;
    let outputEnded = false;
    let stdinReader: ReadableStreamDefaultReader<Uint8Array> | undefined;
    const stopStdin = () => {
      stdinReader?.cancel().catch(() => {});
      stdinReader = undefined;
    };
    const close = () => {
      if (closedByCaller) return;
      closedByCaller = true;
      o.signal?.removeEventListener("abort", close);
      stopStdin();
      conn.close();
      exit.reject(new CanceledError(`${o.what} was closed before the process ended`));
      if (!outputEnded) o.onClosedEarly?.();
    };
    o.signal?.addEventListener("abort", close, { once: true });

    const demuxed = demuxStream(conn.output, {
      tty: o.tty,
      onEnd: (reason, error) => {
        outputEnded = true;
        stopStdin();
        o.signal?.removeEventListener("abort", close);
        conn.close();
        if (closedByCaller) return;
        if (reason === "done") o.exitCode().then(exit.resolve, exit.reject);
        else exit.reject(error ?? new CanceledError(`${o.what} was canceled`));
      },
    });
    const reader = demuxed.getReader();
    const output = new ReadableStream<OutputChunk>({
      async pull(controller) {
        try {
          const r = await reader.read();
          if (r.done) controller.close();
          else controller.enqueue(r.value);
        } catch (err) {
          // After close() the output just ends, even when it stopped inside a frame.
          if (closedByCaller) controller.close();
          else controller.error(err);
        }
      },
      cancel() {
        // Nobody wants the output any more, but the exit code still matters.
        void (async () => {
          try {
            while (!(await reader.read()).done) { /* discard */ }
          } catch { /* ended by close() or an error; exitCode says which */ }
        })();
      },
    }, { highWaterMark: 0 });

    if (o.stdin) {
      const r = o.stdin.getReader();
      stdinReader = r;
      void (async () => {
        try {
          while (true) {
            const { done, value } = await r.read();
            if (done || stdinReader !== r) break;
            await conn.write(value);
          }
          // End of input: the process sees EOF on its stdin; output keeps flowing.
          if (stdinReader === r) await conn.closeWrite();
        } catch (err) {
          this.#log.debug("stdin pump stopped", { what: o.what, error: err });
          if (stdinReader === r) await conn.closeWrite().catch(() => {});
        } finally {
          r.releaseLock();
          if (stdinReader === r) stdinReader = undefined;
        }
      })();
    }

    return {
      output,
      exitCode: exit.promise,
      resize: o.resize,
      close,
    };
  }

  async #execExitCode(execId: string, what: string): Promise<number> {
    const deadline = Date.now() + EXEC_EXIT_POLL_MS;
    let delay = 10;
    while (true) {
      const r = await this.#call("GET", `/exec/${enc(execId)}/json`, what) as {
        Running?: boolean;
        ExitCode?: number | null;
      };
      if (!r.Running) return r.ExitCode ?? -1;
      if (Date.now() > deadline) {
        throw new TimeoutError(
          `${what}: the process was still running ${EXEC_EXIT_POLL_MS} ms after its output ended`,
        );
      }
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 250);
    }
  }

  /**
   * Ends an exec'd process whose client went away: the engine reports its
   * host PID, which gets SIGKILL through `/bin/sh -c kill` (the one program
   * arhat's permission set may start; Deno.kill would need an unrestricted
   * --allow-run). Best effort: failures are logged.
   */
  async #killExec(execId: string, what: string): Promise<void> {
    try {
      const r = await this.#call("GET", `/exec/${enc(execId)}/json`, what) as {
        Running?: boolean;
        Pid?: number;
      };
      if (!r.Running || !r.Pid || r.Pid <= 1) return;
      const out = await new Deno.Command("/bin/sh", {
        args: ["-c", `kill -KILL ${Math.floor(r.Pid)}`],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).output();
      if (out.code !== 0) {
        this.#log.warn("ending an abandoned exec failed", {
          exec: execId,
          pid: r.Pid,
          error: new TextDecoder().decode(out.stderr).trim(),
        });
      } else this.#log.debug("abandoned exec killed", { exec: execId, pid: r.Pid });
    } catch (err) {
      this.#log.warn("ending an abandoned exec failed", { exec: execId, error: String(err) });
    }
  }

  async #resize(path: string, cols: number, rows: number, what: string): Promise<void> {
    const q = new URLSearchParams({ h: String(Math.floor(rows)), w: String(Math.floor(cols)) });
    await this.#call("POST", `${path}?${q}`, what);
  }

  // --- HTTP ----------------------------------------------------------------

  async #inspectRaw(idOrName: string, signal?: AbortSignal): Promise<RawContainer | undefined> {
    const res = await this.#callAllowing(
      "GET",
      `/containers/${enc(idOrName)}/json`,
      `Inspecting container "${idOrName}"`,
      [404],
      { signal },
    );
    return res.status === 404 ? undefined : res.data as RawContainer;
  }

  /** A request whose 2xx JSON body (or undefined) is returned; other statuses throw. */
  async #call(method: string, path: string, what: string, init?: CallInit): Promise<unknown> {
    return (await this.#callAllowing(method, path, what, [], init)).data;
  }

  /** Like {@link #call}, but the statuses in `allow` are returned instead of thrown. */
  async #callAllowing(
    method: string,
    path: string,
    what: string,
    allow: number[],
    init: CallInit = {},
  ): Promise<{ status: number; data: unknown }> {
    const res = await this.#fetch(method, path, what, init);
    const text = await this.#text(res, what);
    if (!res.ok && !allow.includes(res.status)) {
      const err = httpError(what, res.status, engineMessage(text));
      // Podman answers a missing object with 500 and "... no such container" where dockerd says
      // 404: a caller that allows 404 gets 404 for either.
      if (allow.includes(404) && err instanceof NotFoundError) {
        return { status: 404, data: undefined };
      }
      throw err;
    }
    let data: unknown = undefined;
    if (res.ok && text.trim() !== "") {
      try {
        data = JSON.parse(text);
      } catch {
        throw new InternalError(`${what} failed: the engine's answer is not JSON: "${text}"`);
      }
    }
    return { status: res.status, data };
  }

  async #fetch(method: string, path: string, what: string, init: CallInit): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    let body: string | undefined;
    if (init.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(init.json);
    }
    this.#client ??= Deno.createHttpClient({ proxy: { transport: "unix", path: this.#socket } });
    try {
      const res = await fetch(`http://d/${this.#api}${path}`, {
        method,
        headers,
        body,
        signal: init.signal,
        client: this.#client,
      });
      this.#log.debug("engine request", { method, path: path.split("?")[0], status: res.status });
      return res;
    } catch (err) {
      throw transportError(what, this.#socket, err);
    }
  }

  async #text(res: Response, what: string): Promise<string> {
    try {
      return await res.text();
    } catch (err) {
      throw transportError(what, this.#socket, err);
    }
  }
}
