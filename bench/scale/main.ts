/**
 * `deno task bench:scale [--devices 100,1000] [--runs 1] [--concurrency 64] [--connect secret|node]`:
 * aranya (a separate process with the deploy/ RBAC) against N simulated
 * devices (one process, real websocket links, real tokens), on the test
 * control plane (`useCluster`: the running one named by ARANYA_TEST_KUBECONFIG,
 * else a fresh one). Per N (bench/scale/scale_run.ts has the steps):
 *
 * - create rate: N / (first EdgeDevice create until all N Nodes Ready, seen
 *   through one Node watch); anchor: aranya 2019 ~5/s; goal >= 50/s;
 * - delete rate: N / (first delete until all N Nodes gone); anchor ~6/s;
 *   goal >= 50/s;
 * - aranya's peak RSS (process_resident_memory_bytes, sampled every 500 ms);
 *   anchor ~280 MB for 1000 devices; goal <= 150 MB;
 * - aranya's CPU seconds (process_cpu_seconds_total) at the end;
 * - API writes per device (aranya_api_writes_total over the create phase / N);
 * - watches aranya opened (its own metric if any, else the API server's open
 *   WATCH requests before/after), which must not grow with N.
 *
 * --connect: when a simulated device dials: "secret" (default) as soon as its
 * credentials Secret exists, racing aranya's creation of its Node, as a
 * device provisioned with its token at once would; "node" once its Node
 * exists too.
 *
 * Progress and figures go to stderr; the last line on stdout is one JSON
 * object with every figure. With --runs > 1 the median of each figure is
 * printed and every run is in the JSON.
 */
import { flatSummary } from "../summary.ts";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { errorMessage } from "../../common/errors.ts";
import { ARANYA_E2E_DIR, aranyaKubeconfig } from "../../e2e/aranya_harness.ts";
import { applyCrds, useCluster } from "../../e2e/fixtures.ts";
import { testTls } from "../../e2e/link/test_tls.ts";
import { runScale, type ScaleResult } from "./scale_run.ts";
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
      runs: { type: "string", default: "1" },
      concurrency: { type: "string", default: "64" },
      connect: { type: "string", default: "secret" },
    },
    strict: true,
  });
  const devices = values.devices.split(",").map((s) => Number(s.trim()));
  const runs = Number(values.runs);
  const concurrency = Number(values.concurrency);
  for (const n of devices) {
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`--devices: "${values.devices}" is not a list of counts`);
    }
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
  return { devices, runs, concurrency, connect: connect as "secret" | "node" };
}

function median(xs: (number | null | undefined)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((
    a,
    b,
  ) => a - b);
  return v.length ? v[Math.floor(v.length / 2)]! : null;
}

const show = (x: number | null, unit = "") => (x === null ? "n/a" : `${x}${unit}`);

function report(n: number, runs: ScaleResult[]) {
  const m = (f: (r: ScaleResult) => number | null | undefined) => median(runs.map(f));
  const r = {
    createPerSec: m((r) => r.createPerSec),
    createSeconds: m((r) => r.createSeconds),
    readyP50Ms: m((r) => r.readyLatencyMs.p50),
    readyP99Ms: m((r) => r.readyLatencyMs.p99),
    deletePerSec: m((r) => r.deletePerSec),
    deleteSeconds: m((r) => r.deleteSeconds),
    peakRssMB: m((r) => r.peakRssMB),
    peakHeapMB: m((r) => r.peakHeapMB),
    cpuSeconds: m((r) => r.cpuSeconds),
    createCpuSeconds: m((r) => r.createCpuSeconds),
    deleteCpuSeconds: m((r) => r.deleteCpuSeconds),
    writesPerDevice: m((r) => r.writesPerDevice),
    deleteWritesPerDevice: m((r) => r.deleteWritesPerDevice),
    requestsPerDevice: m((r) => r.requestsPerDevice),
    watches: m((r) => r.watches.opened),
    leftoverLeases: m((r) => r.leftoverLeases),
  };
  const last = runs[runs.length - 1]!;
  say(
    `create N=${n}: ${
      show(r.createPerSec)
    } devices/s (2019 aranya ~${ANCHORS.aranya2019CreatePerSec}/s; goal >= ${ANCHORS.goalCreatePerSec}/s); all Ready in ${
      show(r.createSeconds, " s")
    }, per device create->Ready p50 ${show(r.readyP50Ms, " ms")}, p99 ${show(r.readyP99Ms, " ms")}`,
  );
  say(
    `delete N=${n}: ${
      show(r.deletePerSec)
    } devices/s (2019 aranya ~${ANCHORS.aranya2019DeletePerSec}/s; goal >= ${ANCHORS.goalDeletePerSec}/s); all Nodes gone in ${
      show(r.deleteSeconds, " s")
    }`,
  );
  say(
    `RSS N=${n}: peak ${show(r.peakRssMB, " MB")}, V8 heap in use peak ${
      show(r.peakHeapMB, " MB")
    } (${last.rssSource}; 2019 aranya ~${ANCHORS.aranya2019RssMBAt1000} MB for 1000 devices; goal <= ${ANCHORS.goalRssMBAt1000} MB for 1000)`,
  );
  say(
    `CPU N=${n}: ${show(r.cpuSeconds, " s")} over aranya's life (create phase ${
      show(r.createCpuSeconds, " s")
    }, delete phase ${show(r.deleteCpuSeconds, " s")})`,
  );
  say(
    `writes/device N=${n}: ${show(r.writesPerDevice)} in the create phase (delete phase ${
      show(r.deleteWritesPerDevice)
    }; all API requests ${show(r.requestsPerDevice)}/device in the create phase)`,
  );
  const w = last.watches;
  say(
    `watches N=${n}: ${show(r.watches)} opened by aranya (${
      w.source === "aranya"
        ? "aranya's metric"
        : `API server's open WATCH requests before/after; ${w.closedOnStop} closed when aranya stopped; ${
          JSON.stringify(w.byResource)
        }`
    }); leftover node Leases: ${show(r.leftoverLeases)}`,
  );
  say(
    `fleet N=${n}: ${last.fleet.connectsUntilReady} connects until all Ready, ${last.fleet.connects} in all, ${last.fleet.dialFailures} failed dials; commands aranya sent: ${
      JSON.stringify(last.fleet.commands)
    }${
      Object.keys(last.fleet.unsupported).length
        ? `; not answered by the simulated devices: ${JSON.stringify(last.fleet.unsupported)}`
        : ""
    }`,
  );
  return r;
}

if (import.meta.main) {
  const f = flags();
  const machine = machineInfo();
  say(
    `machine: ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, deno ${machine.deno}; ` +
      `aranya, the simulated fleet, the API server and etcd share it; ${f.runs} run(s) per N; ` +
      `devices dial once their ${
        f.connect === "node" ? "Secret and Node exist" : "Secret exists"
      }` +
      (f.runs > 1 ? " (median reported)" : ""),
  );
  const cluster = await useCluster();
  const out: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
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
              dir: `${base}/n${n}-run${i}`,
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
      if (runs.length) out[String(n)] = { ...report(n, runs), runs };
    }
    const w = f.devices.map((n) => [n, (out[String(n)] as { watches?: number })?.watches]);
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
  console.log(JSON.stringify({
    bench: "scale",
    summary: flatSummary(
      Object.fromEntries(
        Object.entries(out).map(([n, r]) => {
          const { runs: _runs, ...figures } = r as Record<string, unknown>;
          return [`n${n}`, figures];
        }),
      ),
    ),
    machine,
    runs: f.runs,
    devices: f.devices,
    concurrency: f.concurrency,
    connect: f.connect,
    anchors: ANCHORS,
    results: out,
    ...(Object.keys(errors).length ? { errors } : {}),
  }));
  Deno.exit(Object.keys(errors).length ? 1 : 0);
}
