import assert from "node:assert/strict";
import { CpuRateTracker } from "./cpu_rate.ts";

Deno.test("CpuRateTracker turns cumulative nanoseconds into nanocores between readings", () => {
  const r = new CpuRateTracker();
  assert.equal(r.rate("a", 1_000, 5e9), undefined, "first reading: no rate");
  // 0.5 s of CPU in 2 s: a quarter core.
  assert.equal(r.rate("a", 3_000, 5.5e9), 250_000_000);
  // Two full cores for one second.
  assert.equal(r.rate("a", 4_000, 7.5e9), 2_000_000_000);
  assert.equal(r.rate("a", 4_000, 7.6e9), undefined, "no time passed");
  assert.equal(r.rate("a", 5_000, 1e9), undefined, "counter reset");
  assert.equal(r.rate("a", 6_000, 1.1e9), 100_000_000, "counts from the reset");
});

Deno.test("CpuRateTracker forgets keys that are gone", () => {
  const r = new CpuRateTracker();
  r.rate("a", 1, 1);
  r.rate("b", 1, 1);
  r.forgetExcept(["b"]);
  assert.equal(r.size, 1);
  assert.equal(r.rate("a", 2, 2), undefined, "a starts over");
  assert.equal(r.rate("b", 1001, 1_000_000_001), 1_000_000_000);
});
