/**
 * Timeouts for many short-lived sessions without a timer each: deadlines are
 * kept in a Map and checked by one interval that runs only while any deadline
 * is pending. A per-request setTimeout/clearTimeout pair costs about as much
 * as the rest of an in-memory round trip; this costs a Map insert and delete.
 * Timeouts fire up to `resolutionMs` late.
 */
export class Deadlines<K> {
  readonly #due = new Map<K, { at: number; fire: () => void }>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(readonly resolutionMs = 50) {}

  /** Calls `fire` once, `ms` from now, unless `clear(key)` comes first. */
  set(key: K, ms: number, fire: () => void): void {
    this.#due.set(key, { at: performance.now() + ms, fire });
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#sweep(), this.resolutionMs);
    }
  }

  /** Forgets the deadline of `key` (no-op when none). */
  clear(key: K): void {
    this.#due.delete(key);
    if (this.#due.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Number of pending deadlines. */
  get size(): number {
    return this.#due.size;
  }

  #sweep(): void {
    const now = performance.now();
    for (const [key, d] of this.#due) {
      if (d.at <= now) {
        this.clear(key);
        d.fire();
      }
    }
  }
}
