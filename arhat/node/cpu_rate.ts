/**
 * `CpuRateTracker`: turns cumulative CPU times into average use between two
 * readings (the kubelet's `usageNanoCores`), remembering the previous reading
 * of every key (the node, each container instance).
 */

/** The previous reading of one key. */
interface Sample {
  timeMs: number;
  cumulativeNs: number;
}

/**
 * Average CPU use per key between consecutive readings.
 *
 * Contract: {@link rate} records the reading and returns the nanocores used
 * since the key's previous reading, or undefined for a key's first reading,
 * when time did not advance, or when the counter went backwards (a new
 * container under the same key). {@link forgetExcept} drops keys not seen in
 * the last round, so the memory stays bounded by what still exists.
 */
export class CpuRateTracker {
  readonly #last = new Map<string, Sample>();

  /** Records `cumulativeNs` at `timeMs` for `key`; returns the rate since the previous reading. */
  rate(key: string, timeMs: number, cumulativeNs: number): number | undefined {
    const prev = this.#last.get(key);
    if (!prev || timeMs >= prev.timeMs) this.#last.set(key, { timeMs, cumulativeNs });
    if (!prev || timeMs <= prev.timeMs || cumulativeNs < prev.cumulativeNs) return undefined;
    const elapsedNs = (timeMs - prev.timeMs) * 1_000_000;
    return Math.round(((cumulativeNs - prev.cumulativeNs) / elapsedNs) * 1e9);
  }

  /** Forgets every key not in `keep`. */
  forgetExcept(keep: Iterable<string>): void {
    const set = new Set(keep);
    for (const k of [...this.#last.keys()]) if (!set.has(k)) this.#last.delete(k);
  }

  /** Number of keys remembered. */
  get size(): number {
    return this.#last.size;
  }
}
