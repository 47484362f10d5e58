/**
 * A short run of bench:link (it must not rot): the real bench as a
 * subprocess with a 20-second idle window, 5-second keepalives so the window
 * holds some, and few active requests; its closing JSON line must carry every
 * transport's figures as positive numbers. The figures are the bench's; here
 * they must only have been measured.
 */
import assert from "node:assert/strict";
import { runBench } from "./smoke.ts";

Deno.test({
  name: "bench:link smoke run: measures every transport and ends with one JSON summary",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const last = await runBench("link", "bench/link_bench.ts", [
      "--window-seconds",
      "20",
      "--settle-seconds",
      "5",
      "--keepalive-seconds",
      "5",
      "--rtt-n",
      "200",
      "--pipeline-n",
      "1000",
      "--runs",
      "1",
      "--timeout-min",
      "8",
    ]);
    for (const t of ["websocket", "grpc", "mqtt"]) {
      for (
        const key of [
          `idle_bytes_per_day_${t}`,
          `idle_bytes_per_day_device_to_aranya_${t}`,
          `idle_bytes_per_day_aranya_to_device_${t}`,
          `idle_bytes_per_day_by_kind_${t}_device_to_aranya_keepalive`,
          `idle_bytes_per_day_by_kind_${t}_aranya_to_device_keepalive`,
          `rtt_p50_us_${t}`,
          `rtt_p99_us_${t}`,
          `pipelined_msgs_per_s_${t}`,
        ]
      ) {
        const v = last.summary[key];
        assert.ok(
          typeof v === "number" && v > 0,
          `${key}: ${v} in ${JSON.stringify(last.summary)}`,
        );
      }
    }
    // aranya's broker keepalive is 30 s, so a 20-second window may hold none of it.
    assert.equal(typeof last.summary.idle_bytes_per_day_mqtt_aranya_leg, "number");
    assert.equal(last.summary.idle_window_s >= 20, true);
    assert.equal(typeof last.anchors.kubeedge_idle_bytes_per_day, "number");
    assert.equal(typeof last.machine.cores, "number");
  },
});
