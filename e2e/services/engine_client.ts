/**
 * A minimal Docker Engine API client for the test environment (image import,
 * tag, push, pull, and running a container to completion), speaking to dockerd
 * or Podman's compatible service over their Unix sockets with Deno's fetch.
 *
 * This is test tooling, not arhat's runtime: arhat gets its own full
 * implementation with hijacked streams.
 */

/** API version both dockerd 20.10 and Podman 4 serve. */
const API = "/v1.41";

/** Credentials for a registry, sent as the X-Registry-Auth header. */
export interface RegistryAuth {
  username: string;
  password: string;
  serveraddress: string;
}

/** Outcome of a pull or push: the engines report failures inside a 200 stream. */
export interface StreamResult {
  ok: boolean;
  /** The engine's error message when `ok` is false. */
  error?: string;
}

/** Engine API client bound to one Unix socket. */
export class EngineClient {
  readonly #client: Deno.HttpClient;

  constructor(readonly socket: string) {
    this.#client = Deno.createHttpClient({ proxy: { transport: "unix", path: socket } });
  }

  /** Releases the HTTP client. */
  close(): void {
    this.#client.close();
  }

  /** Raw request; the caller consumes the body. */
  request(
    method: string,
    path: string,
    init: { body?: BodyInit; json?: unknown; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    let body = init.body;
    if (init.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(init.json);
    }
    return fetch(`http://d${API}${path}`, { method, headers, body, client: this.#client });
  }

  /** Request that must succeed; returns the parsed JSON body (or null when empty). */
  async call(
    method: string,
    path: string,
    init: { body?: BodyInit; json?: unknown; headers?: Record<string, string> } = {},
  ): Promise<unknown> {
    const res = await this.request(method, path, init);
    const text = await res.text();
    if (!res.ok) {
      throw new Error(
        `Engine API "${method} ${path}" on "${this.socket}" failed: ${res.status} ${text.trim()}`,
      );
    }
    return text.trim() === "" ? null : JSON.parse(text);
  }

  /** True when the engine answers /_ping. */
  async ping(): Promise<boolean> {
    const res = await this.request("GET", "/_ping");
    await res.body?.cancel();
    return res.ok;
  }

  /** Imports a rootfs tarball as image `repo:tag`. */
  async importImage(tar: Uint8Array<ArrayBuffer>, repo: string, tag: string): Promise<void> {
    // The tag rides in `repo`: Podman 4.3's compatible API ignores a separate `tag`.
    const q = new URLSearchParams({ fromSrc: "-", repo: `${repo}:${tag}` });
    const res = await this.request("POST", `/images/create?${q}`, {
      body: tar,
      headers: { "content-type": "application/x-tar" },
    });
    const result = await readProgress(res);
    if (!result.ok) throw new Error(`Importing "${repo}:${tag}" failed: ${result.error}`);
    if (!await this.hasImage(`${repo}:${tag}`)) {
      throw new Error(
        `Importing "${repo}:${tag}" into "${this.socket}" reported success but no such image exists`,
      );
    }
  }

  /** Adds tag `repo:tag` to an existing image. */
  async tag(image: string, repo: string, tag: string): Promise<void> {
    await this.call("POST", `/images/${image}/tag?${new URLSearchParams({ repo, tag })}`);
  }

  /** Pushes `repo:tag`; the result carries the engine's error, if any. */
  async push(repo: string, tag: string, auth: RegistryAuth): Promise<StreamResult> {
    const res = await this.request("POST", `/images/${repo}/push?${new URLSearchParams({ tag })}`, {
      headers: { "x-registry-auth": encodeAuth(auth) },
    });
    return readProgress(res);
  }

  /** Pulls `repo:tag`; the result carries the engine's error, if any. */
  async pull(repo: string, tag: string, auth?: RegistryAuth): Promise<StreamResult> {
    const headers: Record<string, string> = {};
    if (auth) headers["x-registry-auth"] = encodeAuth(auth);
    const q = new URLSearchParams({ fromImage: repo, tag });
    return readProgress(await this.request("POST", `/images/create?${q}`, { headers }));
  }

  /** Removes an image; a missing image is not an error. */
  async removeImage(ref: string): Promise<void> {
    const res = await this.request("DELETE", `/images/${ref}?force=true`);
    await res.body?.cancel();
    if (!res.ok && res.status !== 404) {
      throw new Error(`Removing image "${ref}" failed with status ${res.status}`);
    }
  }

  /** True when the image exists locally. */
  async hasImage(ref: string): Promise<boolean> {
    const res = await this.request("GET", `/images/${ref}/json`);
    await res.body?.cancel();
    return res.ok;
  }

  /**
   * Runs `cmd` in a new container from `image` until it exits; returns the exit
   * code and the container's combined output. The container is removed.
   */
  async runToCompletion(image: string, cmd: string[]): Promise<{ code: number; output: string }> {
    const created = await this.call("POST", "/containers/create", {
      json: { Image: image, Cmd: cmd, Tty: true, HostConfig: { NetworkMode: "none" } },
    }) as { Id: string };
    const id = created.Id;
    try {
      await this.call("POST", `/containers/${id}/start`);
      const waited = await this.call("POST", `/containers/${id}/wait`) as { StatusCode: number };
      // With Tty the log stream is raw (not multiplexed), which keeps this helper simple.
      const res = await this.request("GET", `/containers/${id}/logs?stdout=1&stderr=1`);
      const output = await res.text();
      return { code: waited.StatusCode, output };
    } finally {
      const res = await this.request("DELETE", `/containers/${id}?force=true`);
      await res.body?.cancel();
    }
  }

  /** Containers (running or not) whose labels include all of `labels`. */
  async containers(
    labels: Record<string, string>,
  ): Promise<{ Id: string; State: string; Labels: Record<string, string> }[]> {
    const filters = JSON.stringify({ label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) });
    return await this.call(
      "GET",
      `/containers/json?all=1&filters=${encodeURIComponent(filters)}`,
    ) as {
      Id: string;
      State: string;
      Labels: Record<string, string>;
    }[];
  }

  /**
   * Force-removes the containers whose labels include all of `labels` (every container when
   * empty), with their anonymous volumes: the others first, then arhat's infra containers
   * (label `arhat.dev/role=infra`). A pod's containers join its infra container's namespaces,
   * and Podman, asked to remove an infra container while one of them still exists (or is being
   * created), can leave it stuck in its "Removing" state, failing every later container list.
   * Returns how many went.
   */
  async removeContainers(labels: Record<string, string> = {}): Promise<number> {
    const all = Object.keys(labels).length
      ? await this.containers(labels)
      : await this.call("GET", "/containers/json?all=1") as Awaited<
        ReturnType<EngineClient["containers"]>
      >;
    const isInfra = (c: { Labels?: Record<string, string> }) =>
      c.Labels?.["arhat.dev/role"] === "infra";
    const remove = (list: typeof all) =>
      Promise.all(list.map(async (c) => {
        const r = await this.request("DELETE", `/containers/${c.Id}?force=true&v=true`);
        await r.body?.cancel();
      }));
    await remove(all.filter((c) => !isInfra(c)));
    await remove(all.filter(isInfra));
    return all.length;
  }

  /** Reads one file from inside a container (the archive endpoint: a tar of that file). */
  async readFile(id: string, path: string): Promise<string> {
    const res = await this.request(
      "GET",
      `/containers/${id}/archive?path=${encodeURIComponent(path)}`,
    );
    if (!res.ok) {
      throw new Error(
        `Reading "${path}" in container "${id}" failed: ${res.status} ${await res.text()}`,
      );
    }
    const tar = new Uint8Array(await res.arrayBuffer());
    const dec = new TextDecoder();
    // ustar entries: a 512-byte header (size in octal at 124..136, type at 156), then the data
    // padded to 512. PAX headers ("x", "g") come before the file's own entry; skip them.
    for (let at = 0; at + 512 <= tar.length;) {
      const size =
        parseInt(dec.decode(tar.subarray(at + 124, at + 136)).replace(/\0.*$/s, "").trim(), 8) || 0;
      const type = String.fromCharCode(tar[at + 156]!);
      if (type === "0" || type === "\0") return dec.decode(tar.subarray(at + 512, at + 512 + size));
      at += 512 + Math.ceil(size / 512) * 512;
    }
    throw new Error(`Reading "${path}" in container "${id}" found no regular file`);
  }
}

function encodeAuth(auth: RegistryAuth): string {
  return btoa(JSON.stringify(auth)).replaceAll("+", "-").replaceAll("/", "_");
}

/** Reads a JSON-lines progress stream; an HTTP error or an `error` line means failure. */
async function readProgress(res: Response): Promise<StreamResult> {
  const text = await res.text();
  if (!res.ok) {
    let msg = text.trim();
    try {
      msg = (JSON.parse(text) as { message?: string }).message ?? msg;
    } catch { /* not JSON */ }
    return { ok: false, error: `status ${res.status}: ${msg}` };
  }
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    try {
      const obj = JSON.parse(line) as { error?: string; errorDetail?: { message?: string } };
      if (obj.error || obj.errorDetail) {
        return { ok: false, error: obj.errorDetail?.message ?? obj.error };
      }
    } catch { /* ignore partial lines */ }
  }
  return { ok: true };
}
