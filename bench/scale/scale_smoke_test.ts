/**
 * A short run of bench:scale (it must not rot): the real bench as a
 * subprocess with 30 devices over 2 replicas, so every phase runs (create,
 * failover after SIGKILL of one replica, delete until every object is gone);
 * its closing JSON line must carry the flat summary with measured
 * values. The figures are the bench's; here they must only have been measured.
 */
import assert from "node:assert/strict";
import { runBench } from "../smoke.ts";

Deno.test({
  name: "bench:scale smoke run: 30 devices over 2 replicas, failover, one flat JSON summary",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const last = await runBench("scale", "bench/scale/main.ts", [
      "--devices",
      "30",
      "--replicas",
      "2",
    ]);
    const s = last.summary;
    assert.equal(s.devices, 30);
    assert.equal(s.replicas, 2);
    assert.equal(s.pods_restarted, 0);
    for (
      const key of [
        "qps",
        "create_per_s",
        "delete_per_s",
        "rss_mb_per_1000_devices",
        "api_writes_per_device",
        "watches",
        "failover_s",
      ]
    ) {
      assert.ok(typeof s[key] === "number" && s[key] > 0, `${key}: ${s[key]}`);
    }
  },
});
