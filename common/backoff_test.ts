import assert from "node:assert/strict";
import { Backoff, sleep } from "./backoff.ts";
import { CanceledError } from "./errors.ts";

Deno.test("back-off grows to its maximum with jitter below the nominal delay", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5, random: () => 1 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [50, 100, 200, 400, 500]);
  b.reset();
  assert.equal(b.next(), 50);
  const noJitter = new Backoff({ initialMs: 10, maxMs: 15, jitter: 0 });
  assert.deepEqual([noJitter.next(), noJitter.next(), noJitter.next()], [10, 15, 15]);
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
});

Deno.test("sleep is cancellable", async () => {
  const ac = new AbortController();
  const p = sleep(10_000, ac.signal);
  ac.abort();
  await assert.rejects(p, CanceledError);
});
