/** The side-by-side summary of bench:stream: required keys, ratio direction, PSS before RSS. */
import assert from "node:assert/strict";
import { flatSummary } from "../summary.ts";
import type { MemoryFigure } from "./node_memory.ts";
import { type PeerFigures, peerLines, peerSummary, requiredKeys } from "./side_by_side.ts";
import { latency } from "./stats.ts";

const mem = (pssMiB: number | null, rssMiB: number): MemoryFigure => ({
  processes: 3,
  rssMiB,
  pssMiB,
  kinds: { sleep: 3 },
});

function figures(): PeerFigures {
  return {
    pods: 20,
    aranyaProcess: mem(70, 110),
    aranya: {
      exec: { websocket: latency([2, 2, 4]), spdy: latency([1, 3]) },
      portForward: { websocket: 50, spdy: 40 },
      podStart: latency([500, 600]),
      memory: { one: mem(100, 150), many: mem(240, 400) },
    },
    kubelet: {
      exec: { websocket: latency([1, 1, 2]), spdy: latency([1, 2]) },
      portForward: { websocket: 200, spdy: 160 },
      podStart: latency([1000, 1200]),
      memory: { one: mem(null, 150), many: mem(200, 500) },
    },
  };
}

Deno.test("peerSummary: every required ratio as aranya / kubelet, flat, raw figures beside", () => {
  const s = peerSummary(figures());
  for (const k of requiredKeys(20)) assert.equal(typeof s[k], "number", k);
  assert.deepEqual(requiredKeys(20).at(-1), "node_mem_ratio_20_pods");
  assert.equal(s.exec_p50_ratio_ws, 2);
  assert.equal(s.exec_p99_ratio_spdy, 1.5);
  assert.equal(s.portforward_ratio_ws, 0.25); // below 1: slower
  assert.equal(s.pod_start_p99_ratio, 0.5);
  assert.equal(s.node_mem_ratio_20_pods, 1.2); // PSS when both sides have it
  assert.equal(s.node_mem_rss_ratio_20_pods, 0.8);
  assert.equal(s.node_mem_ratio_1_pod, 1); // RSS when one side lacks PSS
  assert.equal(s.aranya_exec_ws_p50_ms, 2);
  assert.equal(s.kubelet_portforward_spdy_mb_s, 160);
  assert.equal(s.aranya_process_rss_mib, 110);
  assert.deepEqual(flatSummary(s, { join: "snake" }), s, "already flat");
});

Deno.test("peerSummary: a figure not measured leaves its ratio out", () => {
  const f = figures();
  f.kubelet.podStart = undefined;
  f.aranya.memory.many = undefined;
  const s = peerSummary(f);
  assert.deepEqual(
    requiredKeys(20).filter((k) => !(k in s)),
    ["pod_start_p99_ratio", "node_mem_ratio_20_pods"],
  );
  assert.ok(peerLines(f).some((l) => l.includes("n/a")));
});
