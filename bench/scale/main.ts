/**
 * `deno task bench:scale [--devices 100,1000] [--replicas 1] [--runs 1] [--concurrency 64] [--connect secret|node]`:
 * R aranya replicas (separate processes with the deploy/ RBAC, the shipped
 * API rate limit and membership on, as deploy/ ships them) against N
 * simulated devices (one process, real websocket links, real tokens; device
 * k dials replica k % R first), on the test control plane (`useCluster`: the
 * running one named by ARANYA_TEST_KUBECONFIG, else a fresh one). Per N
 * (bench/scale/scale_run.ts has the steps):
 *
 * - create rate: N / (first EdgeDevice create until all N Nodes Ready, seen
 *   through one Node watch); anchor: aranya 2019 ~5/s; goal >= 50/s. Bound
 *   120 s + 100 ms per device: past it the run fails (TimeoutError naming
 *   the counts) and the bench exits non-zero, as it does when an aranya
 *   process exits;
 * - failover (R > 1): replica r0 is SIGKILLed; seconds until every Node it
 *   served is Ready on another replica (with that replica's kubelet port);
 *   bound 120 s. `pods_restarted` counts the CMD_POD_DELETE and
 *   CMD_POD_ENSURE the simulated devices received meanwhile (aranya
 *   restarting anything on a device would show there; the proof with real
 *   containers is the e2e failover test, e2e/edge_e2e_test.ts);
 * - delete rate: N / (first delete until every object of the devices is
 *   gone: Nodes, EdgeDevices, virtual pods, credentials Secrets, node
 *   Leases); anchor ~6/s; goal >= 50/s;
 * - RSS: each replica's peak (process_resident_memory_bytes, sampled every
 *   500 ms), summed, per 1000 devices; anchor ~280 MB for 1000 devices;
 *   goal <= 150 MB;
 * - CPU seconds (process_cpu_seconds_total) of all replicas;
 * - API writes per device (sum of the replicas' aranya_api_writes_total over
 *   the create phase / N; by verb from aranya_api_requests_total{verb});
 * - watches aranya opened (the API server's open WATCH requests that closed
 *   when the replicas were killed or stopped; before/after beside it), in all
 *   and per replica, which must not grow with N.
 *
 * --connect: when a simulated device dials: "secret" (default) as soon as its
 * credentials Secret exists, racing aranya's creation of its Node, as a
 * device provisioned with its token at once would; "node" once its Node
 * exists too.
 *
 * Progress and figures go to stderr; the last line on stdout is one JSON
 * object `{"bench":"scale","summary":{...},...}` whose flat `summary` has
 * `devices, replicas, qps, create_per_s, delete_per_s,
 * rss_mb_per_1000_devices, api_writes_per_device, watches, failover_s,
 * pods_restarted` of the last N (failover_s and pods_restarted are null for
 * R = 1), and with several N the same keys prefixed `n<N>_` for each; every
 * detail follows. With --runs > 1 the median of each figure is reported and
 * every run is in the JSON. Exits 1, with the reason, when any run failed.
 */
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { errorMessage } from "@aranya/common/errors";
import { ARANYA_E2E_DIR, aranyaKubeconfig, SHIPPED_API } from "@aranya/e2e/aranya_harness";
import { applyCrds, useCluster } from "@aranya/e2e/fixtures";
import { testTls } from "@aranya/e2e/link/test_tls";
import { checkKubeletPorts, runScale, type ScaleResult } from "./scale_run.ts";
import { machineInfo } from "../machine.ts";

const ANCHORS = {
  aranya2019CreatePerSec: 5,
  aranya2019DeletePerSec: 6,
  aranya2019RssMBAt1000: 280,
  goalCreatePerSec: 50,
  goalDeletePerSec: 50,
  goalRssMBAt1000: 150,
};

const say = (s: string) => console.error(`[bench:scale] ${s}`);

function flags() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      devices: { type: "string", default: "100,1000" },
      replicas: { type: "string", default: "1" },
      runs: { type: "string", default: "1" },
      concurrency: { type: "string", default: "64" },
      connect: { type: "string", default: "secret" },
    },
    strict: true,
  });
  const devices = values.devices.split(",").map((s) => Number(s.trim()));
  const runs = Number(values.runs);
  const replicas = Number(values.replicas);
  if (!Number.isInteger(replicas) || replicas < 1) {
    throw new Error(`--replicas: "${values.replicas}" is not a count`);
  }
  const concurrency = Number(values.concurrency);
  for (const n of devices) {
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`--devices: "${values.devices}" is not a list of counts`);
    }
    checkKubeletPorts(replicas, n);
  }
  if (!Number.isInteger(runs) || runs < 1) {
    throw new Error(`--runs: "${values.runs}" is not a count`);
  }
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new Error(`--concurrency: "${values.concurrency}" is not a count`);
  }
  const connect = values.connect;
  if (connect !== "secret" && connect !== "node") {
    throw new Error(`--connect: "${connect}" is neither "secret" nor "node"`);
  }
  return { devices, replicas, runs, concurrency, connect: connect as "secret" | "node" };
}

function median(xs: (number | null | undefined)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((
    a,
    b,
  ) => a - b);
  return v.length ? v[Math.floor(v.length / 2)]! : null;
}

const show = (x: number | null, unit = "") => (x === null ? "n/a" : `${x}${unit}`);

/** The flat summary keys of one N (the issue's contract). */
interface SummaryFigures {
  devices: number;
  replicas: number;
  qps: number;
  create_per_s: number | null;
  delete_per_s: number | null;
  rss_mb_per_1000_devices: number | null;
  api_writes_per_device: number | null;
  watches: number | null;
  failover_s: number | null;
  pods_restarted: number | null;
}

function report(n: number, replicas: number, runs: ScaleResult[]) {
  const m = (f: (r: ScaleResult) => number | null | undefined) => median(runs.map(f));
  const r = {
    createPerSec: m((r) => r.createPerSec),
    createSeconds: m((r) => r.createSeconds),
    readyP50Ms: m((r) => r.readyLatencyMs.p50),
    readyP99Ms: m((r) => r.readyLatencyMs.p99),
    deletePerSec: m((r) => r.deletePerSec),
    deleteSeconds: m((r) => r.deleteSeconds),
    nodesGoneSeconds: m((r) => r.goneSeconds.nodes),
    peakRssMB: m((r) => r.peakRssMB),
    rssMBPer1000Devices: m((r) => r.rssMBPer1000Devices),
    peakHeapMB: m((r) => r.peakHeapMB),
    cpuSeconds: m((r) => r.cpuSeconds),
    createCpuSeconds: m((r) => r.createCpuSeconds),
    deleteCpuSeconds: m((r) => r.deleteCpuSeconds),
    writesPerDevice: m((r) => r.writesPerDevice),
    deleteWritesPerDevice: m((r) => r.deleteWritesPerDevice),
    requestsPerDevice: m((r) => r.requestsPerDevice),
    watches: m((r) => r.watches.opened),
    watchesPerReplica: m((r) => r.watches.perReplica),
    failoverSeconds: m((r) => r.failover?.seconds),
    failoverDevices: m((r) => r.failover?.devices),
    podsRestarted: m((r) => r.failover?.podsRestarted),
  };
  const last = runs[runs.length - 1]!;
  say(
    `create N=${n} R=${replicas}: ${
      show(r.createPerSec)
    } devices/s (2019 aranya ~${ANCHORS.aranya2019CreatePerSec}/s; goal >= ${ANCHORS.goalCreatePerSec}/s); all Ready in ${
      show(r.createSeconds, " s")
    }, per device create->Ready p50 ${show(r.readyP50Ms, " ms")}, p99 ${
      show(r.readyP99Ms, " ms")
    }; API limit qps ${last.api.qps}, burst ${last.api.burst} per replica (shipped)`,
  );
  if (replicas > 1) {
    const f = last.failover;
    say(
      `failover N=${n} R=${replicas}: ${show(r.failoverDevices)} Nodes of the SIGKILLed ${
        f?.killed ?? "r0"
      } Ready on other replicas after ${show(r.failoverSeconds, " s")}; pods restarted ${
        show(r.podsRestarted)
      }; ${f ? `commands meanwhile ${JSON.stringify(f.commands)}, ` : ""}${
        f ? `${f.connects} dials (${f.dialFailures} failed), ` : ""
      }${f ? `${show(f.writesPerMovedDevice)} writes per moved device, ` : ""}Nodes by replica ${
        JSON.stringify(f?.nodesByReplica ?? {})
      }`,
    );
  }
  say(
    `delete N=${n}: ${
      show(r.deletePerSec)
    } devices/s (2019 aranya ~${ANCHORS.aranya2019DeletePerSec}/s; goal >= ${ANCHORS.goalDeletePerSec}/s); every object gone in ${
      show(r.deleteSeconds, " s")
    } (Nodes ${show(r.nodesGoneSeconds, " s")}; all gone by kind, s: ${
      JSON.stringify(last.goneSeconds)
    })`,
  );
  say(
    `RSS N=${n}: ${
      show(r.rssMBPer1000Devices, " MB")
    } per 1000 devices (sum of the replicas' peaks ${show(r.peakRssMB, " MB")}; V8 heap in use ${
      show(r.peakHeapMB, " MB")
    }; ${last.rssSource}; 2019 aranya ~${ANCHORS.aranya2019RssMBAt1000} MB for 1000 devices; goal <= ${ANCHORS.goalRssMBAt1000} MB for 1000); per replica: ${
      last.perReplica.map((x) =>
        `${x.identity} ${show(x.startRssMB, " MB")} at start, peak ${show(x.peakRssMB, " MB")}, ${
          show(x.devicesConnectedAtReady)
        } devices connected at Ready${x.killed ? " (killed)" : ""}`
      ).join("; ")
    }`,
  );
  say(
    `CPU N=${n}: ${show(r.cpuSeconds, " s")} over the replicas' lives (create phase ${
      show(r.createCpuSeconds, " s")
    }, delete phase ${show(r.deleteCpuSeconds, " s")})`,
  );
  say(
    `writes/device N=${n}: ${show(r.writesPerDevice)} in the create phase ${
      JSON.stringify(last.writesByVerbPerDevice)
    } (delete phase ${show(r.deleteWritesPerDevice)} ${
      JSON.stringify(last.deleteWritesByVerbPerDevice)
    }; all API requests ${show(r.requestsPerDevice)}/device in the create phase ${
      JSON.stringify(last.requestsByVerbPerDevice)
    })`,
  );
  const w = last.watches;
  say(
    `watches N=${n}: ${show(r.watches)} opened by aranya, ${
      show(r.watchesPerReplica)
    } per replica (${
      w.source === "aranya"
        ? "aranya's metric"
        : `API server's open WATCH requests that closed as aranya went away; ${
          w.openedBeforeAfter ?? "n/a"
        } more open after than before; ${
          w.closedOnKill !== undefined ? `${w.closedOnKill} closed when r0 was killed, ` : ""
        }${w.closedOnStop} closed when aranya stopped; ${JSON.stringify(w.byResource)}`
    })`,
  );
  say(
    `fleet N=${n}: ${last.fleet.connectsUntilReady} connects and ${last.fleet.dialFailuresUntilReady} failed dials until all Ready (by replica ${
      JSON.stringify(last.fleet.connectsUntilReadyByReplica)
    }), ${last.fleet.connects} in all, ${last.fleet.dialFailures} failed dials ${
      JSON.stringify(last.fleet.dialFailuresByReason)
    }; commands aranya sent: ${JSON.stringify(last.fleet.commands)}${
      Object.keys(last.fleet.unsupported).length
        ? `; not answered by the simulated devices: ${JSON.stringify(last.fleet.unsupported)}`
        : ""
    }`,
  );
  const summary: SummaryFigures = {
    devices: n,
    replicas,
    qps: SHIPPED_API.qps,
    create_per_s: r.createPerSec,
    delete_per_s: r.deletePerSec,
    rss_mb_per_1000_devices: r.rssMBPer1000Devices,
    api_writes_per_device: r.writesPerDevice,
    watches: r.watches,
    failover_s: r.failoverSeconds,
    pods_restarted: r.podsRestarted,
  };
  return { figures: r, summary };
}

/** The summary of an N without a successful run: the keys, no figures. */
const emptySummary = (n: number, replicas: number): SummaryFigures => ({
  devices: n,
  replicas,
  qps: SHIPPED_API.qps,
  create_per_s: null,
  delete_per_s: null,
  rss_mb_per_1000_devices: null,
  api_writes_per_device: null,
  watches: null,
  failover_s: null,
  pods_restarted: null,
});

if (import.meta.main) {
  let f: ReturnType<typeof flags>;
  try {
    f = flags();
  } catch (err) {
    say(errorMessage(err));
    Deno.exit(2);
  }
  const machine = machineInfo();
  say(
    `machine: ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, deno ${machine.deno}; ` +
      `${f.replicas} aranya replica(s), the simulated fleet, the API server and etcd share it; ${f.runs} run(s) per N; ` +
      `devices dial once their ${
        f.connect === "node" ? "Secret and Node exist" : "Secret exists"
      }` +
      (f.runs > 1 ? " (median reported)" : ""),
  );
  const out: Record<string, unknown> = {};
  const summaries = new Map<number, SummaryFigures>();
  const errors: Record<string, string> = {};
  try {
    const cluster = await useCluster();
    try {
      await applyCrds(cluster);
      // Under ARANYA_E2E_DIR: aranya's permission set reads only there.
      const base = `${ARANYA_E2E_DIR}/bench-scale-${crypto.randomUUID().slice(0, 8)}`;
      const kubeconfig = await aranyaKubeconfig(cluster, base);
      const tls = await testTls();
      const admin = new KubeConfig();
      admin.loadFromFile(cluster.kubeconfig);
      for (const n of f.devices) {
        const runs: ScaleResult[] = [];
        for (let i = 0; i < f.runs; i++) {
          try {
            runs.push(
              await runScale({
                cluster,
                admin,
                aranyaKubeconfig: kubeconfig,
                tls,
                devices: n,
                replicas: f.replicas,
                dir: `${base}/n${n}-r${f.replicas}-run${i}`,
                say,
                concurrency: f.concurrency,
                connect: f.connect,
              }),
            );
          } catch (err) {
            errors[`${n}/${i}`] = errorMessage(err);
            say(`N=${n} run ${i} failed: ${errorMessage(err)}`);
          }
        }
        if (runs.length) {
          const { figures, summary } = report(n, f.replicas, runs);
          summaries.set(n, summary);
          out[String(n)] = { ...figures, runs };
        }
      }
      const w = f.devices.map((n) => [n, summaries.get(n)?.watches]);
      if (w.length > 1) {
        say(
          `watches vs N: ${
            w.map(([n, x]) => `${n} devices -> ${x ?? "n/a"}`).join(", ")
          } (must not grow with N)`,
        );
      }
    } finally {
      await cluster.release();
    }
  } catch (err) {
    errors.setup = errorMessage(err);
    say(`setup failed: ${errorMessage(err)}`);
  }
  const lastN = f.devices[f.devices.length - 1]!;
  const summary: Record<string, number | null> = {
    ...(summaries.get(lastN) ?? emptySummary(lastN, f.replicas)),
  };
  if (f.devices.length > 1) {
    for (const n of f.devices) {
      for (const [k, v] of Object.entries(summaries.get(n) ?? emptySummary(n, f.replicas))) {
        summary[`n${n}_${k}`] = v;
      }
    }
  }
  const failed = Object.keys(errors).length > 0;
  console.log(JSON.stringify({
    bench: "scale",
    summary,
    machine,
    replicas: f.replicas,
    runs: f.runs,
    devices: f.devices,
    concurrency: f.concurrency,
    connect: f.connect,
    api: SHIPPED_API,
    anchors: ANCHORS,
    results: out,
    ...(failed ? { errors } : {}),
  }));
  if (failed) {
    say(
      `FAILED: ${Object.entries(errors).map(([k, v]) => `${k}: ${v.split("\n")[0]}`).join("; ")}`,
    );
  }
  Deno.exit(failed ? 1 : 0);
}
