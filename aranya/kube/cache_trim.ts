/**
 * Keeps informer caches small: `metadata.managedFields` (server-side apply's
 * bookkeeping, about 4-5 KB per Node, pod or EdgeDevice, and the largest part
 * of each cached object) is dropped as objects enter a cache. aranya never
 * reads it, and a write from a cached object without it leaves the server's
 * record as it is (the API server keeps the live object's managedFields when
 * an update carries none).
 *
 * client-node's caches store the very object they hand their "add" and
 * "update" listeners, so trimming it there trims the cache.
 *
 * @module
 */
import type { KubernetesObject } from "@kubernetes/client-node";

/** What {@link trimCached} needs of an informer or ListWatch. */
export interface CacheEvents<T> {
  on(verb: "add" | "update", cb: (obj: T) => void): void;
}

/** Drops the fields aranya never reads from every object `cache` stores. */
export function trimCached<T extends KubernetesObject>(cache: CacheEvents<T>): void {
  const trim = (obj: T) => {
    if (obj.metadata?.managedFields) delete obj.metadata.managedFields;
  };
  cache.on("add", trim);
  cache.on("update", trim);
}
