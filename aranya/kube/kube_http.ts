/**
 * aranya's HTTP transport to the Kubernetes API: JSON requests behind ONE
 * client-side rate limit, and watch streams.
 *
 * Every request waits for a token of the shared {@link RateLimiter} (honouring
 * its abort signal) and is counted by verb in `aranya_api_requests_total{verb}`
 * and, for writes, in `aranya_api_writes_total`. Watches are counted, not
 * rate limited (they are long-lived; their LISTs are limited).
 *
 * Hand-written on the platform's fetch instead of client-node's generated
 * clients: importing client-node costs aranya about 60 MB of memory (its
 * ~900 model classes and their serializer), and its serializer converts every
 * object twice per request; aranya needs JSON in and JSON out. One
 * `Deno.HttpClient` carries the cluster's CA and client certificate and keeps
 * a pool of HTTP/1.1 connections for every request.
 *
 * At most `maxInFlight` requests (default 32) are in flight at once, and a
 * request marked `urgent` (heartbeats) takes the next free slot before the
 * others waiting; a 429
 * answer is retried after its Retry-After (at most 3 times, as client-go
 * retries), so a full API Priority and Fairness queue slows aranya down
 * instead of failing its work.
 *
 * Errors: a response outside 2xx rejects with {@link ApiError} (`code` is the
 * HTTP status, `body` the response text, as `kube/errors.ts` maps them); a
 * transport failure rejects with the platform's error; an abort with the
 * signal's reason.
 *
 * @module
 */
import { sleep } from "@aranya/common/backoff";
import type { AranyaMetrics } from "../metrics/aranya_metrics.ts";
import type { ClusterAccess } from "./kubeconfig.ts";
import type { RateLimiter } from "./rate_limiter.ts";

/** The metrics the transport counts into (an `AranyaMetrics` fits). */
export type ApiMetrics = Pick<
  AranyaMetrics,
  "apiRequestsTotal" | "apiWritesTotal" | "apiRateLimitWaitSecondsTotal"
>;

/** A non-2xx answer of the API server. */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(
    /** The HTTP status. */
    readonly code: number,
    /** The response body (a Status object as JSON, usually). */
    readonly body: string,
    what: string,
  ) {
    let detail = body.slice(0, 300);
    try {
      detail = (JSON.parse(body) as { message?: string }).message ?? detail;
    } catch { /* not JSON */ }
    super(`${what} answered HTTP ${code}: ${detail}`);
  }
}

/** Per-request options. */
export interface RequestOptions {
  /** Cancels the request, and the wait for a rate-limit token. */
  signal?: AbortSignal;
  /** Content type of the body (patches): default application/json. */
  contentType?: string;
  /**
   * Goes ahead of every request not marked so when waiting for an in-flight slot: heartbeats
   * (Lease renewals), which must not wait behind a burst of other work.
   */
  urgent?: boolean;
}

/** Query parameters; undefined ones are left out. */
export type Query = Record<string, string | number | boolean | undefined>;

/** One request. */
export interface ApiRequest extends RequestOptions {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** Path from the server's root, e.g. `/api/v1/nodes/n1`. */
  path: string;
  query?: Query;
  body?: unknown;
}

/** One event of a watch stream. */
export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

/** Content types of the three patch kinds. */
export const PATCH = {
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
} as const;

/** Options of {@link KubeHttp}. */
export interface KubeHttpOptions {
  /** Shared by every request; none: unlimited. */
  limiter?: RateLimiter;
  metrics?: ApiMetrics;
  /** How long a token file's content is used before it is read again; default 60 s. */
  tokenRefreshMs?: number;
  /**
   * Most requests in flight at once (watches not counted); more wait for a slot. Default 32,
   * what client-node's shared agent allowed: without a cap, 64 workers and a fleet's sessions
   * overran the API server's fair queues (HTTP 429) at 3,000 devices over 3 replicas.
   */
  maxInFlight?: number;
  /**
   * Longest one attempt of a request may take once sent (its wait for a token and a slot not
   * counted), ms, to its answer's last byte; then it fails with a TimeoutError. None by default.
   * Watches have none.
   */
  timeoutMs?: number;
}

/** Most retries of a request the API server answered 429 (too many requests). */
const RETRIES_429 = 3;
/** Longest Retry-After honoured, seconds. */
const MAX_RETRY_AFTER_S = 10;

/** The verbs of {@link apiVerb}. */
export type ApiVerb =
  | "get"
  | "list"
  | "watch"
  | "create"
  | "update"
  | "patch"
  | "delete"
  | "deletecollection"
  | "other";

const WRITES: ReadonlySet<ApiVerb> = new Set([
  "create",
  "update",
  "patch",
  "delete",
  "deletecollection",
]);

/** True for verbs that change objects. */
export function isWrite(verb: ApiVerb): boolean {
  return WRITES.has(verb);
}

/**
 * The Kubernetes verb of a request, from its method and URL: a GET of a collection
 * (`/api/v1/pods`, `/api/v1/namespaces/x/pods`, `/apis/g/v/namespaces/x/r`) is a list, or a watch
 * with `watch=true`; a GET of one object (or its subresource) is a get; DELETE of a collection
 * is deletecollection.
 */
export function apiVerb(method: string, url: string): ApiVerb {
  const u = new URL(url, "http://x");
  const segs = u.pathname.split("/").filter((s) => s !== "");
  let rest: string[] = [];
  if (segs[0] === "api") rest = segs.slice(2);
  else if (segs[0] === "apis") rest = segs.slice(3);
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  const collection = rest.length === 1;
  switch (method.toUpperCase()) {
    case "GET": {
      const watch = u.searchParams.get("watch");
      if (watch === "true" || watch === "1") return "watch";
      return collection ? "list" : "get";
    }
    case "HEAD":
      return "get";
    case "POST":
      return "create";
    case "PUT":
      return "update";
    case "PATCH":
      return "patch";
    case "DELETE":
      return collection ? "deletecollection" : "delete";
    default:
      return "other";
  }
}

/** Joins a path and a query into a URL. */
function url(server: string, path: string, query?: Query): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined) params.set(k, String(v));
  }
  const qs = params.toString();
  return `${server}${path}${qs ? `?${qs}` : ""}`;
}

/** The transport; see the module doc. The constructor does no I/O. */
export class KubeHttp {
  readonly #access: ClusterAccess;
  readonly #o: KubeHttpOptions;
  #client?: Deno.HttpClient;
  #token?: { value: string; readAt: number };

  constructor(access: ClusterAccess, opts: KubeHttpOptions = {}) {
    this.#access = access;
    this.#o = opts;
  }

  /** The API server's base URL. */
  get server(): string {
    return this.#access.server;
  }

  /** The kubeconfig context's namespace. */
  get namespace(): string {
    return this.#access.namespace;
  }

  /**
   * Sends one request and returns the response's JSON (undefined for an empty body).
   *
   * @throws ApiError for a non-2xx answer; the platform's error when the server is unreachable;
   *   the signal's reason when aborted.
   */
  async request<T>(req: ApiRequest): Promise<T> {
    const timeoutMs = this.#o.timeoutMs;
    for (let attempt = 0;; attempt++) {
      const started = performance.now();
      await this.#o.limiter?.acquire(req.signal);
      const target = url(this.#access.server, req.path, req.query);
      await this.#slot(req.signal, req.urgent);
      let signal = req.signal;
      if (timeoutMs !== undefined) {
        const limit = AbortSignal.timeout(timeoutMs);
        signal = signal ? AbortSignal.any([signal, limit]) : limit;
      }
      let status: number, text: string, retryAfter: string | null;
      try {
        this.#count(req.method, target, started);
        const headers = this.#headers();
        if (req.body !== undefined) {
          headers.set("Content-Type", req.contentType ?? "application/json");
        }
        const res = await fetch(target, {
          method: req.method,
          headers,
          body: req.body === undefined ? undefined : JSON.stringify(req.body),
          signal,
          client: this.#httpClient(),
        });
        status = res.status;
        retryAfter = res.headers.get("Retry-After");
        text = await res.text();
      } finally {
        this.#release();
      }
      // As client-go does: a 429 (API Priority and Fairness queues full) is retried after the
      // server's Retry-After, a few times, before the caller sees it.
      if (status === 429 && attempt < RETRIES_429) {
        const after = Math.min(Math.max(Number(retryAfter) || 1, 1), MAX_RETRY_AFTER_S);
        await sleep(after * 1000 * (0.5 + Math.random() / 2), req.signal);
        continue;
      }
      if (status < 200 || status > 299) {
        throw new ApiError(status, text, `${req.method} ${req.path}`);
      }
      return (text ? JSON.parse(text) : undefined) as T;
    }
  }

  #inFlight = 0;
  /** Requests waiting for a slot, in order: the urgent ones, then the others. */
  readonly #waiting = { urgent: [] as (() => void)[], other: [] as (() => void)[] };

  /** Waits for a free in-flight slot (see `maxInFlight`); `urgent` ones are handed one first. */
  async #slot(signal?: AbortSignal, urgent = false): Promise<void> {
    if (this.#inFlight < (this.#o.maxInFlight ?? 32)) {
      this.#inFlight++;
      return;
    }
    const queue = urgent ? this.#waiting.urgent : this.#waiting.other;
    await new Promise<void>((resolve, reject) => {
      const go = () => {
        signal?.removeEventListener("abort", cancel);
        resolve();
      };
      const cancel = () => {
        const i = queue.indexOf(go);
        if (i >= 0) queue.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", cancel, { once: true });
      queue.push(go);
    });
  }

  /** Frees a slot: hands it to the first waiter, urgent ones first, if any. */
  #release(): void {
    const next = this.#waiting.urgent.shift() ?? this.#waiting.other.shift();
    if (next) next();
    else this.#inFlight--;
  }

  /**
   * Opens a watch on the collection at `path` and yields its events until the server ends the
   * stream (the caller watches again from the last resourceVersion) or `signal` aborts (the
   * generator then ends without an error).
   *
   * @throws ApiError when the server refuses the watch (410 Gone: the resourceVersion is too
   *   old, list again); the platform's error when the stream breaks.
   */
  async *watch<T>(path: string, query: Query, signal: AbortSignal): AsyncGenerator<WatchEvent<T>> {
    const target = url(this.#access.server, path, { ...query, watch: "true" });
    this.#count("GET", target, performance.now());
    let res: Response;
    try {
      res = await fetch(target, { headers: this.#headers(), signal, client: this.#httpClient() });
    } catch (err) {
      if (signal.aborted) return;
      throw err;
    }
    if (!res.ok) throw new ApiError(res.status, await res.text(), `WATCH ${path}`);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    try {
      while (true) {
        let chunk: ReadableStreamReadResult<string>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (signal.aborted) return;
          throw err;
        }
        if (chunk.done) return;
        buffered += chunk.value;
        let nl: number;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (line) yield JSON.parse(line) as WatchEvent<T>;
        }
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
  }

  /** Closes the kept connections. Requests after this open new ones. */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  #count(method: string, target: string, started: number): void {
    const m = this.#o.metrics;
    if (!m) return;
    const verb = apiVerb(method, target);
    const waited = (performance.now() - started) / 1000;
    if (waited > 0.001) m.apiRateLimitWaitSecondsTotal.inc(waited);
    m.apiRequestsTotal.inc({ verb });
    if (isWrite(verb)) m.apiWritesTotal.inc();
  }

  #httpClient(): Deno.HttpClient {
    if (!this.#client) {
      const a = this.#access;
      this.#client = Deno.createHttpClient({
        // HTTP/1.1 connections in a pool: measured faster for aranya's many small concurrent
        // requests than one HTTP/2 connection (docs/scale.md); watches hold one connection each.
        http2: false,
        http1: true,
        caCerts: a.caPem ? [a.caPem] : undefined,
        ...(a.certPem && a.keyPem ? { cert: a.certPem, key: a.keyPem } : {}),
      });
    }
    return this.#client;
  }

  #headers(): Headers {
    const h = new Headers({ Accept: "application/json", "User-Agent": "aranya" });
    const token = this.#bearer();
    if (token) h.set("Authorization", `Bearer ${token}`);
    else if (this.#access.basic) {
      const { username, password } = this.#access.basic;
      h.set("Authorization", `Basic ${btoa(`${username}:${password}`)}`);
    }
    return h;
  }

  #bearer(): string | undefined {
    const a = this.#access;
    if (a.token) return a.token;
    if (!a.tokenFile) return undefined;
    const now = Date.now();
    if (!this.#token || now - this.#token.readAt > (this.#o.tokenRefreshMs ?? 60_000)) {
      try {
        this.#token = { value: Deno.readTextFileSync(a.tokenFile).trim(), readAt: now };
      } catch {
        // Keep the last token until the file is readable again (it is replaced atomically).
        if (!this.#token) return undefined;
      }
    }
    return this.#token.value;
  }
}
