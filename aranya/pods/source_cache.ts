/**
 * Secrets and ConfigMaps read for pod resolution, shared for a short time
 * (`ttlMs`) between the pods that reference the same object: the periodic
 * re-resolution of running pods (volume updates) then costs one GET per
 * referenced object per `ttlMs` at most, whatever the number of pods using
 * it. A new pod is resolved from a fresh read (`view(true)`), so a pod never
 * starts from data older than the moment it was sent. Objects not used for
 * `ttlMs` are dropped: Secret values are kept no longer than that. Failed
 * reads are not cached.
 *
 * @module
 */
import type { V1ConfigMap, V1Secret } from "@kubernetes/client-node";
import type { PodSources } from "./resolve.ts";

/** The reads a {@link SourceCache} shares. */
export type ObjectSources = Pick<PodSources, "secret" | "configMap">;

/** Options for {@link SourceCache}. */
export interface SourceCacheOptions {
  /** The API reads. */
  sources: ObjectSources;
  /** How long a read is shared, ms. */
  ttlMs: number;
  /** Clock, ms (default Date.now). */
  now?: () => number;
}

interface Entry {
  value: Promise<V1Secret | V1ConfigMap | undefined>;
  at: number;
}

/** A short-lived cache of the Secrets and ConfigMaps pods reference. */
export class SourceCache {
  readonly #o: SourceCacheOptions;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  #swept = 0;

  constructor(opts: SourceCacheOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Objects held now. */
  get size(): number {
    return this.#entries.size;
  }

  /** Reads through the cache; `fresh` reads every object anew (and shares the result). */
  view(fresh: boolean): ObjectSources {
    return {
      secret: (namespace, name) =>
        this.#get(`s/${namespace}/${name}`, fresh, () => this.#o.sources.secret(namespace, name)),
      configMap: (namespace, name) =>
        this.#get(
          `c/${namespace}/${name}`,
          fresh,
          () => this.#o.sources.configMap(namespace, name),
        ),
    };
  }

  // deno-lint-ignore no-explicit-any
  #get(key: string, fresh: boolean, read: () => Promise<any>): Promise<any> {
    const now = this.#now();
    this.#sweep(now);
    const e = this.#entries.get(key);
    if (e && !fresh && now - e.at < this.#o.ttlMs) return e.value;
    const entry: Entry = { value: read(), at: now };
    this.#entries.set(key, entry);
    entry.value.catch(() => {
      if (this.#entries.get(key) === entry) this.#entries.delete(key);
    });
    return entry.value;
  }

  #sweep(now: number): void {
    if (now - this.#swept < this.#o.ttlMs) return;
    this.#swept = now;
    for (const [k, e] of this.#entries) if (now - e.at >= this.#o.ttlMs) this.#entries.delete(k);
  }
}
