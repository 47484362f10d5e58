/**
 * Keys due at given times: the pod controller's one timer for work that must
 * happen later (a running pod's next volume check, a token refresh, an active
 * deadline). `schedule` keeps the earliest time asked for a key; `take`
 * returns and removes the keys whose time has come. One periodic tick scans
 * it, so there is no timer per pod. Pure (the caller passes the time).
 *
 * @module
 */

/** Keys with the time each is next due. */
export class DueSet {
  readonly #at = new Map<string, number>();

  /** Makes `key` due at `at` (ms), unless it is due earlier already. */
  schedule(key: string, at: number): void {
    const cur = this.#at.get(key);
    if (cur === undefined || at < cur) this.#at.set(key, at);
  }

  /** When `key` is due, if it is scheduled. */
  at(key: string): number | undefined {
    return this.#at.get(key);
  }

  /** Forgets `key`. */
  delete(key: string): void {
    this.#at.delete(key);
  }

  /** The keys due at `now` (removed from the set). */
  take(now: number): string[] {
    const due: string[] = [];
    for (const [k, at] of this.#at) {
      if (at <= now) {
        due.push(k);
        this.#at.delete(k);
      }
    }
    return due;
  }

  /** Keys scheduled. */
  get size(): number {
    return this.#at.size;
  }
}
