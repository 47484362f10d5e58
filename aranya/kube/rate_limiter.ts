/**
 * A client-side rate limit for API requests: a token bucket that holds at
 * most `burst` tokens and refills at `qps` tokens per second. Each request
 * takes one token; when none is left it waits for its turn. Waiters are
 * served in arrival order (each reserves the next token, as Go's
 * `rate.Limiter.Wait` does), so a steady stream of requests is never starved.
 *
 * @module
 */
import { CanceledError, InvalidInputError, UnavailableError } from "@aranya/common/errors";

/** Something that hands out permission to send one request. */
export interface RateLimiter {
  /**
   * Resolves when one request may be sent.
   *
   * @throws CanceledError when `signal` aborts first (the token is given back).
   */
  acquire(signal?: AbortSignal): Promise<void>;
}

/** Time for {@link TokenBucket}; tests pass a fake one. */
export interface Clock {
  /** Milliseconds on a monotonic scale. */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when `signal` aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** The real clock. */
export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
    }),
};

/** Options of {@link TokenBucket}. */
export interface TokenBucketOptions {
  /** Tokens added per second (> 0). */
  qps: number;
  /** Most tokens held, i.e. the most requests sent at once after a quiet time (integer >= 1). */
  burst: number;
  /**
   * Longest wait a request accepts, ms: one that would wait longer fails at
   * once with `UnavailableError` instead of queueing (default: no bound). The
   * budget for caller-caused reads uses it, so a flood cannot pile up waiters.
   */
  maxWaitMs?: number;
  clock?: Clock;
}

/** A token bucket; see the module doc. It starts full. */
export class TokenBucket implements RateLimiter {
  readonly qps: number;
  readonly burst: number;
  readonly #maxWaitMs: number;
  readonly #clock: Clock;
  /** Tokens now; negative while waiters hold reservations. */
  #tokens: number;
  #last: number;

  /** @throws InvalidInputError when qps or burst are out of range. */
  constructor(opts: TokenBucketOptions) {
    if (!(opts.qps > 0) || !Number.isFinite(opts.qps)) {
      throw new InvalidInputError(`Rate limit qps must be a positive number; got ${opts.qps}`);
    }
    if (!Number.isInteger(opts.burst) || opts.burst < 1) {
      throw new InvalidInputError(`Rate limit burst must be an integer >= 1; got ${opts.burst}`);
    }
    this.qps = opts.qps;
    this.burst = opts.burst;
    this.#maxWaitMs = opts.maxWaitMs ?? Infinity;
    this.#clock = opts.clock ?? realClock;
    this.#tokens = opts.burst;
    this.#last = this.#clock.now();
  }

  /** Tokens available now (negative: that many requests are waiting). */
  get tokens(): number {
    this.#refill();
    return this.#tokens;
  }

  /** Takes a token if one is available now; never waits. */
  tryAcquire(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** {@inheritDoc RateLimiter.acquire} */
  async acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw canceled(signal);
    this.#refill();
    this.#tokens -= 1;
    if (this.#tokens >= 0) return;
    const waitMs = (-this.#tokens * 1000) / this.qps;
    if (waitMs > this.#maxWaitMs) {
      this.#tokens += 1;
      throw new UnavailableError(
        `Too many requests: the rate limit (${this.qps}/s) would make this one wait ${
          Math.round(waitMs)
        } ms`,
      );
    }
    try {
      await this.#clock.sleep(waitMs, signal);
    } catch (err) {
      this.#refill();
      this.#tokens = Math.min(this.burst, this.#tokens + 1);
      throw signal?.aborted ? canceled(signal) : err;
    }
  }

  #refill(): void {
    const now = this.#clock.now();
    const elapsed = Math.max(0, now - this.#last);
    this.#last = now;
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.qps) / 1000);
  }
}

function canceled(signal: AbortSignal): CanceledError {
  return new CanceledError("Waiting for the API rate limit was canceled", { cause: signal.reason });
}
