/** Jittered exponential back-off for reconnect loops. */
import { CanceledError } from "./errors.ts";

/** Back-off settings. */
export interface BackoffOptions {
  /** First delay, ms (default 1000). */
  initialMs?: number;
  /** Largest delay, ms (default 30000). */
  maxMs?: number;
  /** Growth per attempt (default 1.5). */
  factor?: number;
  /** Fraction of each delay that is random, 0..1 (default 0.2): delay * (1 - jitter * rand). */
  jitter?: number;
  /** Random source in [0, 1); injectable for tests. */
  random?: () => number;
}

/** Delays for successive attempts; `reset()` after a success. */
export class Backoff {
  readonly #initial: number;
  readonly #max: number;
  readonly #factor: number;
  readonly #jitter: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.#initial = opts.initialMs ?? 1000;
    this.#max = opts.maxMs ?? 30_000;
    this.#factor = opts.factor ?? 1.5;
    this.#jitter = Math.min(1, Math.max(0, opts.jitter ?? 0.2));
    this.#random = opts.random ?? Math.random;
    if (!(this.#initial > 0) || !(this.#max >= this.#initial) || !(this.#factor >= 1)) {
      throw new RangeError(
        `Invalid back-off: initialMs ${this.#initial}, maxMs ${this.#max}, factor ${this.#factor}`,
      );
    }
  }

  /** The delay before the next attempt, in ms; grows until maxMs. */
  next(): number {
    const raw = Math.min(this.#max, this.#initial * this.#factor ** this.#attempt);
    this.#attempt++;
    return Math.round(raw * (1 - this.#jitter * this.#random()));
  }

  /** Starts over from initialMs. */
  reset(): void {
    this.#attempt = 0;
  }

  /** Number of delays handed out since the last reset. */
  get attempts(): number {
    return this.#attempt;
  }
}

/** Waits `ms`, or rejects with CanceledError as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CanceledError("Wait canceled"));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new CanceledError("Wait canceled"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
