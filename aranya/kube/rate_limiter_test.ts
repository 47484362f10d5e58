import assert from "node:assert/strict";
import { CanceledError, InvalidInputError, UnavailableError } from "@aranya/common/errors";
import { type Clock, TokenBucket } from "./rate_limiter.ts";

/** A clock moved by hand; sleepers wake when `advance` passes their deadline. */
class FakeClock implements Clock {
  t = 0;
  #sleepers: { at: number; resolve(): void }[] = [];
  now(): number {
    return this.t;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = { at: this.t + ms, resolve };
      this.#sleepers.push(s);
      signal?.addEventListener("abort", () => {
        this.#sleepers = this.#sleepers.filter((x) => x !== s);
        reject(signal.reason);
      }, { once: true });
    });
  }
  /** Moves time forward and lets woken sleepers run. */
  async advance(ms: number): Promise<void> {
    this.t += ms;
    const due = this.#sleepers.filter((s) => s.at <= this.t + 1e-9);
    this.#sleepers = this.#sleepers.filter((s) => !due.includes(s));
    for (const s of due) s.resolve();
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }
}

/** Starts acquires and records the fake time each finished at. */
function track(bucket: TokenBucket, clock: FakeClock, n: number, signal?: AbortSignal) {
  const done: number[] = [];
  const all = Array.from({ length: n }, () =>
    bucket.acquire(signal).then(() => {
      done.push(clock.t);
    }));
  return { done, all };
}

Deno.test("TokenBucket lets a burst through at once, then one request per 1/qps", async () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket({ qps: 5, burst: 3, clock });
  const { done } = track(bucket, clock, 6);
  await clock.advance(0);
  assert.deepEqual(done, [0, 0, 0]);
  assert.equal(bucket.tokens, -3);
  for (let i = 0; i < 3; i++) await clock.advance(200);
  assert.deepEqual(done, [0, 0, 0, 200, 400, 600]);
  assert.ok(Math.abs(bucket.tokens) < 1e-9);
});

Deno.test("TokenBucket with maxWaitMs fails at once instead of queueing beyond it", async () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket({ qps: 10, burst: 2, maxWaitMs: 250, clock });
  // Two at once, then waits of 100 and 200 ms are accepted; the next would wait 300 ms.
  const { done } = track(bucket, clock, 4);
  await assert.rejects(bucket.acquire(), UnavailableError);
  await assert.rejects(bucket.acquire(), /would make this one wait 300 ms/);
  await clock.advance(0);
  assert.deepEqual(done, [0, 0]);
  await clock.advance(100);
  await clock.advance(100);
  assert.deepEqual(done, [0, 0, 100, 200], "the accepted waiters are served in turn");
  assert.ok(bucket.tryAcquire() === false && Math.abs(bucket.tokens) < 1e-9, "no token lost");
});

Deno.test("TokenBucket refills up to burst only", async () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket({ qps: 10, burst: 2, clock });
  assert.ok(bucket.tryAcquire());
  assert.ok(bucket.tryAcquire());
  assert.equal(bucket.tryAcquire(), false);
  await clock.advance(60_000); // a long quiet time adds no more than burst
  assert.equal(bucket.tokens, 2);
  const { done } = track(bucket, clock, 3);
  await clock.advance(0);
  assert.deepEqual(done, [60_000, 60_000]);
  await clock.advance(99);
  assert.equal(done.length, 2);
  await clock.advance(1);
  assert.equal(done.length, 3);
});

Deno.test("TokenBucket.acquire() rejects with CanceledError on abort and gives the token back", async () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket({ qps: 1, burst: 1, clock });
  await bucket.acquire();
  const ac = new AbortController();
  const waiting = bucket.acquire(ac.signal);
  assert.equal(bucket.tokens, -1);
  ac.abort();
  await assert.rejects(waiting, CanceledError);
  assert.equal(bucket.tokens, 0);
  await assert.rejects(bucket.acquire(ac.signal), CanceledError); // already aborted: no token taken
  assert.equal(bucket.tokens, 0);
  const { done } = track(bucket, clock, 1);
  await clock.advance(1000);
  assert.deepEqual(done, [1000]);
});

Deno.test("TokenBucket with the real clock spaces requests by 1/qps", async () => {
  const bucket = new TokenBucket({ qps: 20, burst: 1 });
  const start = performance.now();
  for (let i = 0; i < 5; i++) await bucket.acquire();
  const took = performance.now() - start;
  assert.ok(took >= 190, `5 acquires at 20 qps, burst 1, took ${took} ms`);
});

Deno.test("TokenBucket refuses a bad qps or burst", () => {
  for (const [qps, burst] of [[0, 1], [-1, 1], [NaN, 1], [Infinity, 1], [1, 0], [1, 1.5]]) {
    assert.throws(() => new TokenBucket({ qps: qps!, burst: burst! }), InvalidInputError);
  }
});
