/**
 * A small run of bench:flood (it must not rot): the real bench as a
 * subprocess, a short flood, and its closing JSON line with the figures.
 * The figures themselves are for the bench, not asserted here beyond being
 * measured and the device's Lease having been renewed.
 */
import assert from "node:assert/strict";
import { runBench } from "../smoke.ts";

Deno.test({
  name: "bench:flood smoke run: measures and ends with one JSON summary",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const last = await runBench("flood", "bench/flood/main.ts", [
      "--seconds",
      "12",
      "--connections",
      "4",
    ]);
    const s = last.summary;
    for (const k of ["websocketRefusalsPerSec", "grpcRefusalsPerSec", "kubeletRefusalsPerSec"]) {
      assert.ok(typeof s[k] === "number" && s[k] > 0, `${k}: ${s[k]}`);
    }
    assert.ok(s.leaseRenewals >= 2, `renewals: ${s.leaseRenewals}`);
    assert.equal(typeof s.maxRenewalGapMs, "number");
  },
});
