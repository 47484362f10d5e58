/**
 * `set` for a Map used as a bounded cache: the key becomes the newest entry
 * and the oldest entries go once the map holds more than `max`. Caches that
 * callers can fill (unknown tokens, device names) use it so that a flood costs
 * bounded memory and evicts the oldest entries, not everything.
 */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}
