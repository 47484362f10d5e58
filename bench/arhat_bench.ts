/**
 * `deno task bench:arhat`: per engine (Podman, dockerd), arhat runs as a real
 * process under its permission set against a websocket link server playing
 * aranya, and we measure:
 *
 * - idle RSS of the arhat process (ps), after it connected and settled;
 * - pod start latency: from sending CMD_POD_ENSURE to receiving the pod's
 *   status with phase Running, image present, one container; 50 pods in a
 *   row (ARANYA_BENCH_PODS), p50/p99.
 *
 * Anchors: KubeEdge's edge agent needs about 70 MB; goal at most 50 MB idle.
 * The last line is one JSON object.
 */
import { machineInfo } from "./machine.ts";
import { flatSummary } from "./summary.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind } from "../common/envelope.ts";
import {
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "../proto/gen/aranya/pod_pb.ts";
import { PodDeleteCmdSchema } from "../proto/gen/aranya/pod_pb.ts";
import { kill } from "../e2e/arhat_harness.ts";
import { rssMB, startBenchArhat } from "./bench_arhat.ts";
import { useServices } from "../e2e/fixtures.ts";
import { testTls } from "../e2e/link/test_tls.ts";

const PODS = Number(Deno.env.get("ARANYA_BENCH_PODS") ?? 50);
const say = (s: string) => console.error(`[bench:arhat] ${s}`);

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;

if (import.meta.main) {
  const services = await useServices();
  const results: Record<string, unknown> = {};
  const tls = await testTls();
  try {
    for (const engine of ["podman", "docker"] as const) {
      const socket = engine === "podman"
        ? services.endpoints.podmanSocket
        : services.endpoints.dockerSocket;
      const { aranya, arhat } = await startBenchArhat({
        name: "bench",
        socket,
        image: services.endpoints.testImage,
        ca: tls.ca,
      });
      try {
        const c = await aranya.connected();
        await new Promise((r) => setTimeout(r, 5000));
        const idle = await rssMB(arhat.child.pid);
        const latencies: number[] = [];
        const uids: string[] = [];
        for (let i = 0; i < PODS; i++) {
          const uid = crypto.randomUUID();
          uids.push(uid);
          const seen = aranya.statuses.length;
          const t0 = performance.now();
          await c.request(
            CmdKind.CMD_POD_ENSURE,
            toBinary(
              PodEnsureCmdSchema,
              create(PodEnsureCmdSchema, {
                uid,
                namespace: "bench",
                name: `p${i}`,
                restartPolicy: RestartPolicy.ALWAYS,
                specHash: "v1",
                terminationGraceSeconds: 1n,
                containers: [{
                  name: "app",
                  image: services.endpoints.testImage,
                  command: ["sleep", "3600"],
                }],
              }),
            ),
          );
          for (;;) {
            const hit = aranya.statuses.slice(seen).find((s) =>
              s.uid === uid && s.phase === PodStatusMsg_Phase.RUNNING
            );
            if (hit) {
              latencies.push(hit.at - t0);
              break;
            }
            await new Promise((r) => setTimeout(r, 5));
          }
        }
        const busy = await rssMB(arhat.child.pid);
        for (const uid of uids) {
          await c.request(
            CmdKind.CMD_POD_DELETE,
            toBinary(PodDeleteCmdSchema, create(PodDeleteCmdSchema, { uid, graceSeconds: 1n })),
          );
        }
        latencies.sort((a, b) => a - b);
        const r = {
          idleRssMB: idle,
          rssWith50PodsMB: busy,
          podStartP50Ms: Math.round(pct(latencies, 0.5)),
          podStartP99Ms: Math.round(pct(latencies, 0.99)),
          pods: PODS,
        };
        results[engine] = r;
        say(
          `${engine}: idle RSS ${idle} MB (goal 50 MB; KubeEdge edge agent ~70 MB: ${
            (idle / 70).toFixed(2)
          }x), with ${PODS} pods ${busy} MB; pod start p50 ${r.podStartP50Ms} ms, p99 ${r.podStartP99Ms} ms`,
        );
      } finally {
        await kill(arhat);
        await aranya.stop();
      }
    }
  } finally {
    await services.release();
  }
  console.log(JSON.stringify({
    bench: "arhat",
    summary: flatSummary(results),
    machine: machineInfo(),
    runs: 1,
    anchors: { kubeedgeEdgeAgentMB: 70, goalIdleRssMB: 50 },
    engines: results,
  }));
  Deno.exit(0);
}
