import assert from "node:assert/strict";
import { latency, mbPerSec, median, percentile, ratio, round, show, showRatio } from "./stats.ts";

Deno.test("percentile takes the nearest rank, in any input order", () => {
  const xs = Array.from({ length: 200 }, (_, i) => 200 - i); // 200..1
  assert.equal(percentile(xs, 50), 100);
  assert.equal(percentile(xs, 99), 198);
  assert.equal(percentile(xs, 100), 200);
  assert.equal(percentile([7], 99), 7);
  assert.equal(percentile([], 50), null);
  assert.equal(percentile([3, NaN, 1], 50), 1);
  assert.throws(() => percentile([1], 0), RangeError);
});

Deno.test("median of odd and even counts", () => {
  assert.equal(median([5, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([]), null);
});

Deno.test("rates, ratios and display", () => {
  assert.equal(mbPerSec(64 << 20, 1000), 67.108864);
  assert.throws(() => mbPerSec(1, 0), RangeError);
  assert.equal(ratio(6, 3), 2);
  assert.equal(ratio(null, 3), null);
  assert.equal(ratio(1, 0), null);
  assert.equal(round(1234.56), 1235);
  assert.equal(round(0.0123456), 0.0123);
  assert.equal(show(12.3456, " ms"), "12.3 ms");
  assert.equal(show(null, " ms"), "n/a");
  assert.equal(showRatio(4.2049), "x4.2");
  const l = latency([2, 1, 3]);
  assert.deepEqual(l, { count: 3, p50Ms: 2, p99Ms: 3, minMs: 1, maxMs: 3 });
});
