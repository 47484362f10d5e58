/**
 * `deno task bench:link`: what the device link costs.
 *
 * - idle (link_idle.ts): the real aranya process with its production config
 *   and one real arhat as shipped (the bundle under its permission set) per
 *   transport, each with one pod running on Podman, all idle at once; tcpdump
 *   counts every frame on the links for the window (default 30 min), split by
 *   direction (device -> aranya, aranya -> device) and kind (keepalive, the
 *   session messages aranya counted, tcp), extrapolated to a day. MQTT counts
 *   the device's broker connection and aranya's (shared by the broker's
 *   devices, divided among them).
 * - active (link_active.ts): round trip p50/p99 of a 64-byte unary request
 *   and pipelined requests per second, with aranya's link server in this
 *   process and the device's dialer in a child process (the link stack only).
 *
 * Flags: --mode all|idle|active (default all), --window-seconds N (default
 * 1800, or ARANYA_BENCH_IDLE_SECONDS), --settle-seconds N (default 60),
 * --keepalive-seconds N (every device's keepalive, for short windows; default
 * the products' defaults), --mqtt-dynamic-security (per-device broker accounts,
 * see link_idle.ts), --transports websocket,grpc,mqtt, --rtt-n,
 * --pipeline-n, --runs, --timeout-min (default: window + 20 min).
 *
 * The control plane and services come from the e2e helpers (the running ones
 * named by ARANYA_TEST_*, else fresh ones) and are stopped at the end, also on
 * failure, interruption or timeout. The last line is one JSON object
 * `{"bench":"link","summary":{...}}` with a flat summary (snake case), the
 * anchors, the machine and the window; the exit code is 1 when something
 * could not be measured.
 *
 * Anchors: KubeEdge idle ~2.7 MB/day per node; goal <= 200 KB/day per device
 * on websocket and grpc, moonshot 50 KB/day.
 */
import { parseArgs } from "node:util";
import { errorMessage } from "@aranya/common/errors";
import { CACHE, ensureDir } from "@aranya/e2e/paths";
import { inBenchWorld } from "./bench_world.ts";
import { type ActiveFigures, type LinkTransport, measureActive } from "./link_active.ts";
import { type IdleResult, measureIdle } from "./link_idle.ts";
import { machineInfo } from "./machine.ts";
import { flatSummary } from "./summary.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    mode: { type: "string", default: "all" },
    "window-seconds": {
      type: "string",
      default: Deno.env.get("ARANYA_BENCH_IDLE_SECONDS") ?? "1800",
    },
    "settle-seconds": { type: "string", default: "60" },
    "keepalive-seconds": { type: "string" },
    transports: {
      type: "string",
      default: Deno.env.get("ARANYA_BENCH_TRANSPORTS") ?? "websocket,grpc,mqtt",
    },
    "rtt-n": { type: "string", default: Deno.env.get("ARANYA_BENCH_RTT_N") ?? "5000" },
    "pipeline-n": { type: "string", default: Deno.env.get("ARANYA_BENCH_PIPELINE_N") ?? "20000" },
    runs: { type: "string", default: Deno.env.get("ARANYA_BENCH_RUNS") ?? "3" },
    "timeout-min": { type: "string" },
    "mqtt-dynamic-security": { type: "boolean", default: false },
  },
});

const say = (s: string) => console.error(`[bench:link] ${s}`);
const KB = 1024;
export const ANCHORS = {
  kubeedge_idle_bytes_per_day: 2.7 * KB * KB,
  goal_idle_bytes_per_day: 200 * KB,
  moonshot_idle_bytes_per_day: 50 * KB,
};

function positive(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`bench:link: --${name} must be a positive number (got "${v}")`);
    Deno.exit(2);
  }
  return n;
}

if (import.meta.main) {
  const mode = args.mode;
  if (!["all", "idle", "active"].includes(mode)) {
    console.error(`bench:link: --mode must be all, idle or active (got "${mode}")`);
    Deno.exit(2);
  }
  const transports = args.transports.split(",").filter((t): t is LinkTransport =>
    t === "websocket" || t === "grpc" || t === "mqtt"
  );
  const windowSeconds = positive("window-seconds", args["window-seconds"]);
  const settleSeconds = Number(args["settle-seconds"]);
  const keepaliveSeconds = args["keepalive-seconds"]
    ? positive("keepalive-seconds", args["keepalive-seconds"])
    : undefined;
  const timeoutMin = args["timeout-min"]
    ? positive("timeout-min", args["timeout-min"])
    : windowSeconds / 60 + 20;
  const machine = machineInfo();
  say(
    `machine: ${JSON.stringify(machine)}; mode ${mode}; transports ${transports.join(",")}; ` +
      `idle window ${windowSeconds} s; timeout ${timeoutMin.toFixed(0)} min`,
  );

  // Never hang: at the deadline the measurement is aborted (its waits end, everything it
  // started is stopped); if that does not end the run within 2 minutes, exit anyway (every
  // process the bench started dies with it).
  const ac = new AbortController();
  const deadline = setTimeout(() => {
    say(`timed out after ${timeoutMin} min; stopping`);
    ac.abort();
    setTimeout(() => {
      say("cleanup did not finish in 2 min; exiting");
      Deno.exit(3);
    }, 120_000);
  }, timeoutMin * 60_000);

  const errors: string[] = [];
  let active: Partial<Record<LinkTransport, ActiveFigures>> = {};
  if (mode !== "idle") {
    try {
      active = await measureActive({
        transports,
        rttN: positive("rtt-n", args["rtt-n"]),
        pipelineN: positive("pipeline-n", args["pipeline-n"]),
        runs: positive("runs", args.runs),
        say,
      });
    } catch (err) {
      errors.push(`active: ${errorMessage(err)}`);
      say(`active: could not measure: ${errorMessage(err)}`);
    }
  }
  let idle: IdleResult | undefined;
  if (mode !== "active" && !ac.signal.aborted) {
    // A folder per run: a smoke run beside a long one must not write into its capture.
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const dir = await ensureDir(`${CACHE}/bench-link/${stamp}-${crypto.randomUUID().slice(0, 8)}`);
    const r = await inBenchWorld(say, (w) =>
      measureIdle(w, {
        transports,
        windowSeconds,
        settleSeconds,
        keepaliveSeconds,
        mqttDynamicSecurity: args["mqtt-dynamic-security"],
        dir,
        signal: ac.signal,
        say,
      }));
    if (r.error) errors.push(`idle: ${r.error}`);
    idle = r.out;
  }
  clearTimeout(deadline);

  const byTransport = <T>(f: (t: LinkTransport) => T | undefined) =>
    Object.fromEntries(transports.map((t) => [t, f(t)]).filter(([, v]) => v !== undefined));
  const it = (t: LinkTransport) => idle?.transports[t];
  for (const t of transports) {
    if (mode !== "active" && !(it(t)?.bytes_per_day! > 0)) {
      errors.push(`idle: nothing measured on ${t}`);
    }
    if (mode !== "idle" && !active[t]) errors.push(`active: nothing measured on ${t}`);
  }
  const kinds = (t: LinkTransport) => {
    const f = it(t);
    if (!f) return undefined;
    return {
      device_to_aranya: f.device_to_aranya_by_kind,
      aranya_to_device: f.aranya_to_device_by_kind,
    };
  };
  const summary = flatSummary({
    idle_bytes_per_day: byTransport((t) => it(t)?.bytes_per_day),
    idle_bytes_per_day_device_to_aranya: byTransport((t) => it(t)?.device_to_aranya_bytes_per_day),
    idle_bytes_per_day_aranya_to_device: byTransport((t) => it(t)?.aranya_to_device_bytes_per_day),
    idle_bytes_per_day_by_kind: byTransport(kinds),
    idle_bytes_per_day_mqtt_device_leg: it("mqtt")?.legs?.device_leg.bytes_per_day,
    idle_bytes_per_day_mqtt_aranya_leg: it("mqtt")?.legs?.aranya_leg.bytes_per_day,
    idle_arhat_rss_mb: byTransport((t) => it(t)?.arhat_rss_mb),
    idle_aranya_rss_mb: idle?.aranya_rss_mb,
    idle_window_s: idle?.window_s,
    rtt_p50_us: byTransport((t) => active[t]?.rtt_p50_us),
    rtt_p99_us: byTransport((t) => active[t]?.rtt_p99_us),
    pipelined_msgs_per_s: byTransport((t) => active[t]?.pipelined_msgs_per_s),
    ...ANCHORS,
  }, { join: "snake" });
  for (const t of transports) {
    const f = it(t);
    if (!f) continue;
    const goal = t === "mqtt"
      ? ""
      : `; goal 200 KB/day ${
        f.bytes_per_day <= ANCHORS.goal_idle_bytes_per_day ? "met" : "NOT met"
      }, moonshot 50 KB/day ${
        f.bytes_per_day <= ANCHORS.moonshot_idle_bytes_per_day ? "met" : "not met"
      }`;
    say(
      `${t}: idle ${(f.bytes_per_day / KB).toFixed(1)} KB/day (device->aranya ${
        (f.device_to_aranya_bytes_per_day / KB).toFixed(1)
      }, aranya->device ${(f.aranya_to_device_bytes_per_day / KB).toFixed(1)}); ${
        (ANCHORS.kubeedge_idle_bytes_per_day / f.bytes_per_day).toFixed(1)
      }x less than KubeEdge's ~2.7 MB/day${goal}`,
    );
  }
  if (errors.length) say(`could not measure: ${errors.join("; ")}`);
  console.log(JSON.stringify({
    bench: "link",
    summary,
    anchors: ANCHORS,
    machine,
    mode,
    window_s: idle?.window_s ?? windowSeconds,
    keepalive_override_s: keepaliveSeconds ?? null,
    idle: idle ?? null,
    active,
    ...(errors.length ? { errors } : {}),
  }));
  Deno.exit(errors.length ? 1 : 0);
}
