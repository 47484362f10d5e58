/**
 * A short run of bench:arhat (it must not rot): the real bench as a
 * subprocess with a 10-second idle window, 2 pods, 5 exec sessions and port-forward
 * connections, and 3 pod starts per engine; its closing JSON line must carry every
 * figure as a number. The figures are the bench's; here they must only have been measured.
 */
import assert from "node:assert/strict";
import { runBench } from "./smoke.ts";

Deno.test({
  name: "bench:arhat smoke run: measures the shipped arhat per transport and pod starts",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const last = await runBench("arhat", "bench/arhat_bench.ts", [
      "--window-seconds",
      "10",
      "--settle-seconds",
      "3",
      "--pods",
      "2",
      "--sessions",
      "5",
      "--pod-starts",
      "3",
    ]);
    const s = last.summary;
    for (
      const key of [
        "idle_rss_mb_websocket",
        "idle_rss_mb_grpc",
        "idle_rss_mb_mqtt",
        "first_start_rss_mb",
        "rss_mb_2_pods",
        "pod_start_p99_ms",
        "pod_start_podman_pod_start_p50_ms",
        "pod_start_docker_pod_start_p99_ms",
      ]
    ) {
      assert.ok(
        typeof s[key] === "number" && s[key] > 0,
        `${key}: ${s[key]} in ${JSON.stringify(s)}`,
      );
    }
    for (const key of ["rss_growth_pct_5_execs", "rss_growth_pct_5_port_forwards"]) {
      assert.equal(typeof s[key], "number", `${key} in ${JSON.stringify(s)}`);
    }
    assert.ok(s.engine_processes_left >= 0);
    assert.equal(s.kubeedge_edgecore_rss_mb, 70);
    assert.equal(s.goal_idle_rss_mb, 50);
    assert.equal(s.goal_idle_rss_mb_mqtt, 60);
    assert.equal(typeof last.machine.cores, "number");
  },
});
