/**
 * `deno task bench:arhat`: arhat's footprint and pod start latency.
 *
 * - footprint (arhat_footprint.ts), on what we ship: the real aranya with its
 *   production config and one arhat per transport as shipped (the bundle, its
 *   permission set and V8 flags), one pod each on Podman, idle for the window:
 *   idle RSS per transport; then on the websocket device RSS with `--pods`
 *   (20) pods, RSS growth after `--sessions` (1,000) `kubectl exec` sessions
 *   and as many port-forward connections, conmon processes left behind, and
 *   the first start's RSS (empty DENO_DIR).
 * - pod start, per engine (Podman, dockerd): arhat from source under its
 *   permission set against a link server playing aranya; from sending
 *   CMD_POD_ENSURE to the pod's status with phase Running, image present, one
 *   container; `--pod-starts` (50, or ARANYA_BENCH_PODS) pods in a row,
 *   p50/p99, and RSS with them all running.
 *
 * Flags: --window-seconds (600), --settle-seconds (30), --pods (20),
 * --sessions (1000), --pod-starts (50), --transports websocket,grpc,mqtt,
 * --v8-flags "--a,--b" (instead of the shipped ones, to measure them; "none"
 * for none), --mode all|footprint|pod-start.
 *
 * Anchors: KubeEdge's edgecore about 70 MB; goal at most 50 MB idle on
 * websocket and gRPC, 60 MB on MQTT. The last line is one JSON object
 * `{"bench":"arhat","summary":{...}}` with a flat summary (snake case); the
 * exit code is 1 when something could not be measured.
 */
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind } from "@aranya/common/envelope";
import { errorMessage } from "@aranya/common/errors";
import {
  PodDeleteCmdSchema,
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import { kill } from "@aranya/e2e/arhat_harness";
import { useServices } from "@aranya/e2e/fixtures";
import { testTls } from "@aranya/e2e/link/test_tls";
import { CACHE, ensureDir } from "@aranya/e2e/paths";
import { type FootprintResult, measureFootprint } from "./arhat_footprint.ts";
import { rssMB, startBenchArhat } from "./bench_arhat.ts";
import { inBenchWorld } from "./bench_world.ts";
import type { LinkTransport } from "./link_active.ts";
import { machineInfo } from "./machine.ts";
import { flatSummary } from "./summary.ts";

/** The figures arhat is held against. */
export const ANCHORS = {
  kubeedge_edgecore_rss_mb: 70,
  goal_idle_rss_mb: 50,
  goal_idle_rss_mb_mqtt: 60,
  goal_pod_start_p99_ms: 1000,
};

const say = (s: string) => console.error(`[bench:arhat] ${s}`);

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;

/** Pod start figures of one engine. */
interface PodStart {
  pod_start_p50_ms: number;
  pod_start_p99_ms: number;
  rss_mb_with_pods: number;
  pods: number;
}

/** Pod start latency on `engine` (see the module doc). */
async function measurePodStart(
  services: Awaited<ReturnType<typeof useServices>>,
  engine: "podman" | "docker",
  pods: number,
  say: (line: string) => void,
): Promise<PodStart> {
  const tls = await testTls();
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
    const latencies: number[] = [];
    const uids: string[] = [];
    for (let i = 0; i < pods; i++) {
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
    const order = latencies.map((ms, i) => ({ i, ms }));
    latencies.sort((a, b) => a - b);
    // Which pods were slow (the first one is the first to use the pod network, for example).
    const slowest = order.sort((a, b) => b.ms - a.ms).slice(0, 3);
    say(
      `${engine}: slowest starts: ${
        slowest.map((x) => `pod ${x.i} ${Math.round(x.ms)} ms`).join(", ")
      }`,
    );
    return {
      pod_start_p50_ms: Math.round(pct(latencies, 0.5)),
      pod_start_p99_ms: Math.round(pct(latencies, 0.99)),
      rss_mb_with_pods: busy,
      pods,
    };
  } finally {
    await kill(arhat);
    await aranya.stop();
  }
}

function positive(name: string, v: string, zero = false): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (!zero && n === 0)) {
    console.error(`bench:arhat: --${name} must be a ${zero ? "" : "positive "}number (got "${v}")`);
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  const { values: args } = parseArgs({
    args: Deno.args,
    options: {
      mode: { type: "string", default: "all" },
      "window-seconds": { type: "string", default: "600" },
      "settle-seconds": { type: "string", default: "30" },
      pods: { type: "string", default: "20" },
      sessions: { type: "string", default: "1000" },
      "pod-starts": { type: "string", default: Deno.env.get("ARANYA_BENCH_PODS") ?? "50" },
      transports: { type: "string", default: "websocket,grpc,mqtt" },
      "v8-flags": { type: "string" },
    },
    strict: true,
  });
  const mode = args.mode;
  if (!["all", "footprint", "pod-start"].includes(mode)) {
    console.error(`bench:arhat: --mode must be all, footprint or pod-start (got "${mode}")`);
    Deno.exit(2);
  }
  const transports = args.transports.split(",").filter((t): t is LinkTransport =>
    t === "websocket" || t === "grpc" || t === "mqtt"
  );
  const v8Flags = args["v8-flags"] === undefined
    ? undefined
    : args["v8-flags"] === "none"
    ? []
    : args["v8-flags"].split(",");
  const machine = machineInfo();
  say(`machine: ${JSON.stringify(machine)}; mode ${mode}`);
  const errors: string[] = [];

  let footprint: FootprintResult | undefined;
  if (mode !== "pod-start") {
    const dir = await ensureDir(`${CACHE}/bench-arhat`);
    const r = await inBenchWorld(say, (w) =>
      measureFootprint(w, {
        transports,
        windowSeconds: positive("window-seconds", args["window-seconds"]),
        settleSeconds: positive("settle-seconds", args["settle-seconds"], true),
        pods: positive("pods", args.pods, true),
        sessions: positive("sessions", args.sessions, true),
        ...(v8Flags ? { v8Flags } : {}),
        dir,
        say,
      }));
    if (r.error) errors.push(`footprint: ${r.error}`);
    footprint = r.out;
    for (const e of footprint?.errors ?? []) errors.push(`footprint: ${e}`);
  }

  const engines: Partial<Record<"podman" | "docker", PodStart>> = {};
  if (mode !== "footprint") {
    const services = await useServices();
    try {
      for (const engine of ["podman", "docker"] as const) {
        try {
          const r = await measurePodStart(
            services,
            engine,
            positive("pod-starts", args["pod-starts"]),
            say,
          );
          engines[engine] = r;
          say(
            `${engine}: pod start p50 ${r.pod_start_p50_ms} ms, p99 ${r.pod_start_p99_ms} ms ` +
              `(${r.pods} pods; RSS with them ${r.rss_mb_with_pods} MB, arhat from source)`,
          );
        } catch (err) {
          errors.push(`pod start on ${engine}: ${errorMessage(err)}`);
        }
      }
    } finally {
      await services.release();
    }
  }

  const f = footprint;
  const idle = f?.idle_rss_mb ?? {};
  for (const t of transports) {
    const v = idle[t];
    if (mode === "pod-start") break;
    if (v === undefined) {
      errors.push(`footprint: nothing measured on ${t}`);
      continue;
    }
    const goal = t === "mqtt" ? ANCHORS.goal_idle_rss_mb_mqtt : ANCHORS.goal_idle_rss_mb;
    say(
      `${t}: idle RSS ${v} MB (shipped bundle, real aranya): goal ${goal} MB ${
        v <= goal ? "met" : "NOT met"
      }; KubeEdge's edgecore ~${ANCHORS.kubeedge_edgecore_rss_mb} MB`,
    );
  }
  const p99s = Object.values(engines).map((e) => e.pod_start_p99_ms);
  const summary = flatSummary({
    idle_rss_mb: idle,
    idle_rss_max_mb: f?.idle_rss_max_mb,
    idle_window_s: f?.idle_window_s,
    first_start_rss_mb: f?.first_start_rss_mb,
    ...(f?.rss_mb_pods !== undefined ? { [`rss_mb_${f.pods}_pods`]: f.rss_mb_pods } : {}),
    ...(f?.rss_growth_pct_execs !== undefined
      ? {
        [`rss_growth_pct_${f.sessions}_execs`]: f.rss_growth_pct_execs,
        [`rss_growth_pct_${f.sessions}_port_forwards`]: f.rss_growth_pct_port_forwards,
        exec_failures: f.exec_failures,
        port_forward_failures: f.port_forward_failures,
        engine_processes_left: f.engine_processes_left,
      }
      : {}),
    pod_start_p99_ms: p99s.length ? Math.max(...p99s) : undefined,
    pod_start: engines,
    ...ANCHORS,
  }, { join: "snake" });
  if (errors.length) say(`could not measure: ${errors.join("; ")}`);
  console.log(JSON.stringify({
    bench: "arhat",
    summary,
    anchors: ANCHORS,
    machine,
    mode,
    v8_flags: f?.v8_flags ?? null,
    footprint: footprint ?? null,
    engines,
    ...(errors.length ? { errors } : {}),
  }));
  Deno.exit(errors.length ? 1 : 0);
}
