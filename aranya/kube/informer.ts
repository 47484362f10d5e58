/**
 * A list-and-watch cache of one collection: the objects at `path` (narrowed
 * by a label and a field selector), kept current by a watch.
 *
 * Contract:
 * - `start()` lists (through the rate-limited transport), fills the cache,
 *   emits `add` for new objects, `update` for known ones whose
 *   resourceVersion changed meanwhile (a relist) and `delete` for vanished
 *   ones, then resolves and keeps a watch running from the list's
 *   resourceVersion (with bookmarks). When the list fails (the API server
 *   may answer 429 while it starts), the `error` handlers are told and
 *   start() resolves, as client-node's informers do: the owner starts it
 *   again (`kube/watch_restarts.ts`); without `error` handlers it rejects.
 * - Watch events emit `add`, `update` or `delete` after the cache changed. A
 *   watch the server ends is opened again from the last resourceVersion; a
 *   "410 Gone" (the version is too old) lists again. Any other failure emits
 *   `error` and stops the watch: the owner decides when to `start()` again
 *   (`kube/watch_restarts.ts`).
 * - `metadata.managedFields` (server-side apply's bookkeeping, about 4-5 KB
 *   per Node, pod or EdgeDevice, the largest part of each cached object) is
 *   dropped as objects enter the cache. aranya never reads it, and a write
 *   from a cached object without it leaves the server's record as it is (the
 *   API server keeps the live object's managedFields when an update carries
 *   none).
 * - String values of cached objects are shared with the other caches of the
 *   process (`string_pool.ts`: JSON.parse makes a copy of every string, and
 *   a thousand Nodes repeat the same reasons, messages and namespace names).
 * - `stop()` ends the watch; the cache keeps its last content.
 * - Handlers run synchronously in event order; a handler that throws is
 *   logged and does not stop the informer or the other handlers.
 *
 * Hand-written instead of client-node's informer, as the rest of aranya's API
 * client (`kube_http.ts` says why).
 *
 * @module
 */
import { errorMessage } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import type { KubeHttp, Query } from "./kube_http.ts";
import { ApiError } from "./kube_http.ts";
import { cachedStrings, type StringPool } from "./string_pool.ts";

/** What the informer needs of an object. */
export interface KubeObject {
  metadata?: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    managedFields?: unknown;
  };
}

type Verb = "add" | "update" | "delete";

/** Options of {@link Informer}. */
export interface InformerOptions {
  http: KubeHttp;
  /** The collection, e.g. `/api/v1/nodes` or `/apis/g/v/namespaces/ns/things`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Where a throwing handler is reported. */
  log?: Logger;
  /** Where cached objects' strings are shared (default: the process's {@link cachedStrings}). */
  strings?: StringPool;
}

/** The cache; see the module doc. The constructor does no I/O. */
export class Informer<T extends KubeObject> {
  readonly #o: InformerOptions;
  readonly #objects = new Map<string, T>();
  readonly #handlers: Record<Verb, ((obj: T) => void)[]> = { add: [], update: [], delete: [] };
  readonly #errorHandlers: ((err: unknown) => void)[] = [];
  #abort?: AbortController;
  #resourceVersion = "";
  #synced = false;

  constructor(opts: InformerOptions) {
    this.#o = opts;
  }

  /** Registers a handler (see the module doc for when each runs). */
  on(verb: Verb, cb: (obj: T) => void): void;
  on(verb: "error", cb: (err: unknown) => void): void;
  on(verb: Verb | "error", cb: ((obj: T) => void) | ((err: unknown) => void)): void {
    if (verb === "error") this.#errorHandlers.push(cb as (err: unknown) => void);
    else this.#handlers[verb].push(cb as (obj: T) => void);
  }

  /** True once a list succeeded: the cache holds the collection (as of then, or later). */
  get synced(): boolean {
    return this.#synced;
  }

  /** The cached objects (of `namespace` when given). */
  list(namespace?: string): T[] {
    const all = [...this.#objects.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata?.namespace === namespace);
  }

  /** The cached object `name` (in `namespace`, for namespaced collections). */
  get(name: string, namespace?: string): T | undefined {
    return this.#objects.get(namespace ? `${namespace}/${name}` : name);
  }

  /** Lists, then watches in the background; see the module doc. */
  async start(): Promise<void> {
    this.#abort?.abort();
    const abort = new AbortController();
    this.#abort = abort;
    try {
      await this.#list(abort.signal);
    } catch (err) {
      if (abort.signal.aborted) return;
      this.#abort = undefined;
      if (this.#errorHandlers.length === 0) throw err;
      for (const h of this.#errorHandlers) h(err);
      return;
    }
    void this.#watchLoop(abort.signal);
  }

  /** Ends the watch. */
  stop(): Promise<void> {
    this.#abort?.abort();
    this.#abort = undefined;
    return Promise.resolve();
  }

  #selectors(): Query {
    return { labelSelector: this.#o.labelSelector, fieldSelector: this.#o.fieldSelector };
  }

  async #list(signal: AbortSignal): Promise<void> {
    const list = await this.#o.http.request<
      { metadata?: { resourceVersion?: string }; items?: T[] }
    >(
      { method: "GET", path: this.#o.path, query: this.#selectors(), signal },
    );
    if (signal.aborted) return;
    const seen = new Set<string>();
    for (const obj of list.items ?? []) {
      const key = keyOf(obj);
      seen.add(key);
      const known = this.#objects.get(key)?.metadata?.resourceVersion;
      if (known === undefined || known !== obj.metadata?.resourceVersion) this.#store(key, obj);
    }
    for (const [key, old] of [...this.#objects]) {
      if (!seen.has(key)) {
        this.#objects.delete(key);
        this.#emit("delete", old);
      }
    }
    this.#resourceVersion = list.metadata?.resourceVersion ?? "";
    this.#synced = true;
  }

  #store(key: string, obj: T): void {
    // Set to undefined, not deleted: a deleted property turns the object into V8's larger
    // dictionary layout; JSON.stringify leaves an undefined property out all the same.
    if (obj.metadata?.managedFields) obj.metadata.managedFields = undefined;
    (this.#o.strings ?? cachedStrings).shareStrings(obj);
    const known = this.#objects.has(key);
    this.#objects.set(key, obj);
    this.#emit(known ? "update" : "add", obj);
  }

  async #watchLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        // The server ends a watch after timeoutSeconds; spread them as client-go does.
        const timeoutSeconds = 300 + Math.floor(Math.random() * 300);
        const events = this.#o.http.watch<T>(this.#o.path, {
          ...this.#selectors(),
          resourceVersion: this.#resourceVersion,
          allowWatchBookmarks: true,
          timeoutSeconds,
        }, signal);
        for await (const ev of events) {
          if (signal.aborted) return;
          if (ev.type === "ERROR") {
            const status = ev.object as { code?: number; message?: string };
            throw new ApiError(
              status.code ?? 500,
              JSON.stringify(ev.object),
              `WATCH ${this.#o.path}`,
            );
          }
          const rv = ev.object?.metadata?.resourceVersion;
          if (rv) this.#resourceVersion = rv;
          if (ev.type === "BOOKMARK") continue;
          const key = keyOf(ev.object);
          if (ev.type === "DELETED") {
            this.#objects.delete(key);
            if (ev.object.metadata?.managedFields) ev.object.metadata.managedFields = undefined;
            this.#emit("delete", ev.object);
          } else {
            this.#store(key, ev.object);
          }
        }
      } catch (err) {
        if (signal.aborted) return;
        let failure = err;
        if (err instanceof ApiError && err.code === 410) {
          try {
            await this.#list(signal);
            continue;
          } catch (listErr) {
            failure = listErr;
          }
        }
        if (signal.aborted) return;
        this.#abort = undefined;
        for (const h of this.#errorHandlers) h(failure);
        return;
      }
    }
  }

  #emit(verb: Verb, obj: T): void {
    for (const h of this.#handlers[verb]) {
      try {
        h(obj);
      } catch (err) {
        (this.#o.log ?? nullLogger).warn("an informer handler failed", {
          path: this.#o.path,
          event: verb,
          error: errorMessage(err),
        });
      }
    }
  }
}

function keyOf(obj: KubeObject): string {
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${obj.metadata?.name}` : obj.metadata?.name ?? "";
}
