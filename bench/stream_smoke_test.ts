/**
 * A short run of bench:stream (it must not rot): the real bench as a
 * subprocess with a 1 MiB blob, 1 download and 5 round trips per path, and 2
 * pod starts per node; it starts the kubelet peer (a worker node), so it is
 * skipped, with the reason, where a worker node cannot run. Its closing JSON
 * line must carry every ratio against the kubelet and the raw figures as
 * numbers. The figures are the bench's; here they must only have been measured.
 */
import assert from "node:assert/strict";
import { runBench } from "./smoke.ts";
import { peerSkipReason } from "./stream/peer_node.ts";
import { requiredKeys } from "./stream/side_by_side.ts";

const reason = await peerSkipReason();
if (reason) console.warn(`bench:stream smoke run skipped: ${reason}`);

Deno.test({
  name: "bench:stream smoke run: streams, pod start and node memory beside the kubelet peer",
  ignore: reason !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const pods = 2;
    const last = await runBench("stream", "bench/stream/main.ts", [
      "--runs",
      "1",
      "--round-trips",
      "5",
      "--warmup",
      "2",
      "--blob-mib",
      "1",
      "--pod-starts",
      String(pods),
      "--settle-seconds",
      "1",
    ]);
    const s = last.summary;
    for (
      const key of [
        ...requiredKeys(pods),
        "exec_p99_ratio_ws",
        "node_mem_ratio_1_pod",
        "aranya_exec_ws_p50_ms",
        "kubelet_exec_spdy_p99_ms",
        "aranya_portforward_ws_mb_s",
        "kubelet_portforward_spdy_mb_s",
        "aranya_pod_start_p99_ms",
        "kubelet_pod_start_p99_ms",
        `aranya_node_mem_pss_mib_${pods}_pods`,
        `kubelet_node_mem_rss_mib_${pods}_pods`,
        "aranya_process_rss_mib",
      ]
    ) {
      assert.ok(
        typeof s[key] === "number" && s[key] > 0,
        `${key}: ${s[key]} in ${JSON.stringify(s)}`,
      );
    }
    assert.equal(last.errors, undefined);
    assert.equal(typeof last.exec.direct.p50Ms, "number");
    assert.equal(typeof last.machine.cores, "number");
  },
});
