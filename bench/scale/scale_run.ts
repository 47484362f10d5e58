/**
 * One measurement of aranya at N devices (see bench/scale/main.ts for the
 * figures and anchors):
 *
 * 1. a fresh namespace; ONE Node watch (label arhat.dev/namespace=<ns>) and
 *    ONE Secret watch (for the device tokens), both the bench's own, opened
 *    before the API server's watch count is taken as the baseline;
 * 2. aranya as a separate process (e2e/aranya_harness.ts spawnAranya) with
 *    the deploy/ RBAC, watching only that namespace, leader election off,
 *    the websocket link on a free port with test TLS, API qps/burst 500/1000;
 *    its /metrics sampled every 500 ms;
 * 3. create: N EdgeDevices created in parallel (admin client); as each
 *    device's credentials Secret appears (or, with `connect: "node"`, once
 *    its Node exists too) its simulated device dials aranya
 *    (bench/scale/sim_fleet.ts, all in this process); the time runs from the
 *    first create until the Node watch has seen all N Nodes Ready;
 * 4. delete: all N EdgeDevices deleted in parallel; the time runs until the
 *    Node watch has seen all N Nodes deleted;
 * 5. aranya and the fleet stop, and whatever is left (finalizers, Nodes,
 *    Leases) is removed, also when a step failed.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1Secret,
} from "@kubernetes/client-node";
import { credentialsSecretName } from "../../aranya/edgedevice/types.ts";
import { errorMessage } from "../../common/errors.ts";
import {
  aranyaConfigYaml,
  aranyaLogTail,
  type AranyaProcess,
  spawnAranya,
  type SpawnAranyaOptions,
  waitAranyaReady,
} from "../../e2e/aranya_harness.ts";
import { type ClusterHandle, uniqueName } from "../../e2e/fixtures.ts";
import type { TestTls } from "../../e2e/link/test_tls.ts";
import { ensureDir } from "../../e2e/paths.ts";
import { freePort, sleep } from "../../e2e/process.ts";
import { MetricsSampler } from "./metrics_sampler.ts";
import { NodeTracker } from "./node_tracker.ts";
import { forEachLimit } from "./pool.ts";
import { parsePrometheus, type PromSample, sumOf } from "./prom.ts";
import { SimFleet } from "./sim_fleet.ts";
import { type ObjectWatch, watchObjects } from "./watch_objects.ts";

const GROUP = "aranya.arhat.dev";
const VERSION = "v1alpha1";
const PLURAL = "edgedevices";
const SECRET_SUFFIX = credentialsSecretName("");

/** Options of {@link runScale}. */
export interface ScaleRunOptions {
  cluster: ClusterHandle;
  /** Admin access, for the bench's own creates, deletes and watches. */
  admin: KubeConfig;
  /** aranya's kubeconfig (e2e/aranya_harness.ts aranyaKubeconfig). */
  aranyaKubeconfig: string;
  tls: TestTls;
  devices: number;
  /** Work folder of this run (config, TLS files, aranya's log). */
  dir: string;
  /** Progress lines. */
  say: (line: string) => void;
  /**
   * When a simulated device dials: "secret" (default) as soon as its
   * credentials Secret exists, as a device provisioned with its token at once
   * would, racing aranya's creation of the Node; "node" once its Node exists
   * too, which leaves that race out of the figures.
   */
  connect?: "secret" | "node";
  /** aranya's log level (default "warn": logging 1000 devices at info costs CPU). */
  aranyaLogLevel?: "debug" | "info" | "warn" | "error";
  /** Creates and deletes in flight (default 64). */
  concurrency?: number;
  /** Limit for each phase, ms (default 120 s + 500 ms per device). */
  phaseTimeoutMs?: number;
  /** Starts aranya (default: e2e/aranya_harness.ts spawnAranya; a stand-in for testing the bench). */
  spawn?: (opts: SpawnAranyaOptions) => Promise<AranyaProcess>;
}

/** Watches aranya opened, and how they were counted. */
export interface WatchFigures {
  /** "aranya" when aranya exports a watch metric, else "apiserver" (open WATCH requests, before/after). */
  source: "aranya" | "apiserver";
  /** Watches open because of aranya, once all devices were Ready. */
  opened: number;
  /** Watches that closed when aranya stopped (a cross-check of `opened`; apiserver only). */
  closedOnStop?: number;
  /** `opened` by resource (apiserver only). */
  byResource?: Record<string, number>;
  /** `closedOnStop` by resource (apiserver only). */
  closedOnStopByResource?: Record<string, number>;
}

/** The figures of one run. */
export interface ScaleResult {
  devices: number;
  namespace: string;
  /** Devices per second from the first create until all Nodes were Ready. */
  createPerSec: number;
  createSeconds: number;
  /** Seconds the creates themselves took (all API calls answered). */
  createCallsSeconds: number;
  /** Per device: from its create call's answer until its Node was first Ready (ms). */
  readyLatencyMs: { p50: number; p99: number; max: number };
  /** Devices per second from the first delete until all Nodes were gone. */
  deletePerSec: number;
  deleteSeconds: number;
  /** Highest RSS of aranya during the run, MB (and where it was read). */
  peakRssMB: number | null;
  /** Peak V8 heap in use (of the RSS), MB. */
  peakHeapMB: number | null;
  rssSource: "metrics" | "ps";
  /** aranya's CPU time at the end of the delete phase (its whole life), s. */
  cpuSeconds: number | null;
  createCpuSeconds: number | null;
  deleteCpuSeconds: number | null;
  /** aranya_api_writes_total delta over the create phase / N; null when the metric is missing. */
  writesPerDevice: number | null;
  /** The same over the delete phase. */
  deleteWritesPerDevice: number | null;
  /** aranya_api_requests_total (all verbs) delta over the create phase / N. */
  requestsPerDevice: number | null;
  /** aranya_devices_connected when all Nodes were Ready. */
  devicesConnected: number | null;
  watches: WatchFigures;
  /** Node Leases of this run still in kube-node-lease 2 s after all Nodes were gone. */
  leftoverLeases: number;
  /** The simulated devices: dials, and the commands aranya sent them (by kind; unanswered ones apart). */
  fleet: {
    /** Successful dials until all Nodes were Ready (N when no link dropped). */
    connectsUntilReady: number;
    connects: number;
    dialFailures: number;
    commands: Record<string, number>;
    unsupported: Record<string, number>;
  };
  metricsSamples: number;
}

const MB = 1024 * 1024;
const round = (x: number, d = 1) => +x.toFixed(d);

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : NaN;
}

/** Open WATCH requests on the API server, by "resource.group". */
async function apiserverWatches(cluster: ClusterHandle): Promise<Record<string, number>> {
  const samples = parsePrometheus(await cluster.kubectlOk(["get", "--raw", "/metrics"]));
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (s.name !== "apiserver_longrunning_requests" || s.labels.verb !== "WATCH") continue;
    const k = s.labels.group ? `${s.labels.resource}.${s.labels.group}` : s.labels.resource ?? "";
    out[k] = (out[k] ?? 0) + s.value;
  }
  return out;
}

function diff(after: Record<string, number>, before: Record<string, number>) {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(after), ...Object.keys(before)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

const total = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);

/** Sum of aranya's own watch metrics, if it has any (a name with "watch" in it). */
function aranyaWatchMetric(samples: PromSample[]): number | undefined {
  const names = new Set(
    samples.map((s) => s.name).filter((n) => n.startsWith("aranya_") && /watch/.test(n)),
  );
  let sum: number | undefined;
  for (const n of names) sum = (sum ?? 0) + (sumOf(samples, n) ?? 0);
  return sum;
}

const delta = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined ? null : a - b;

/** Runs one measurement; see the module doc. Always stops what it started. */
export async function runScale(o: ScaleRunOptions): Promise<ScaleResult> {
  const n = o.devices;
  const conc = o.concurrency ?? 64;
  const phaseMs = o.phaseTimeoutMs ?? 120_000 + n * 500;
  const ns = uniqueName(`scale-${n}`);
  const names = Array.from({ length: n }, (_, i) => `${ns}-${i}`);
  const wanted = new Set(names);
  const core = o.admin.makeApiClient(CoreV1Api);
  const custom = o.admin.makeApiClient(CustomObjectsApi);
  await ensureDir(o.dir);
  const wsPort = freePort();
  const httpPort = freePort();
  const fleetAc = new AbortController();
  const samplerAc = new AbortController();
  const fleet = new SimFleet({ url: `wss://localhost:${wsPort}/v1/link`, ca: o.tls.ca });
  // Tokens by device, until the device was handed to the fleet (then undefined).
  const tokens = new Map<string, string | undefined>();
  const nodes = new Set<string>();
  const maybeStart = (device: string) => {
    const token = tokens.get(device);
    if (token === undefined || (o.connect === "node" && !nodes.has(device))) return;
    tokens.set(device, undefined);
    fleet.add({ namespace: ns, name: device, token });
  };
  const tracker = new NodeTracker({
    kubeconfig: o.admin,
    core,
    namespace: ns,
    onNode: (name) => {
      if (nodes.has(name)) return;
      nodes.add(name);
      maybeStart(name);
    },
  });
  let secrets: ObjectWatch | undefined;
  let aranya: AranyaProcess | undefined;
  let sampler: MetricsSampler | undefined;
  const running: Promise<void>[] = [];
  try {
    await o.cluster.kubectlOk(["create", "namespace", ns]);
    await tracker.start();
    running.push(fleet.run(fleetAc.signal));
    await fleet.ready;
    secrets = await watchObjects<V1Secret>({
      kubeconfig: o.admin,
      path: `/api/v1/namespaces/${ns}/secrets`,
      list: () => core.listNamespacedSecret({ namespace: ns }),
      onUpsert: (s) => {
        const secretName = s.metadata?.name ?? "";
        if (!secretName.endsWith(SECRET_SUFFIX)) return;
        const device = secretName.slice(0, -SECRET_SUFFIX.length);
        const b64 = s.data?.token;
        if (!wanted.has(device) || tokens.has(device) || !b64) return;
        tokens.set(device, atob(b64));
        maybeStart(device);
      },
      onDelete: () => {},
    });
    await sleep(1000); // the bench's own two watches are registered before the baseline
    const watchesBefore = await apiserverWatches(o.cluster);

    await Deno.writeTextFile(`${o.dir}/tls.crt`, o.tls.cert);
    await Deno.writeTextFile(`${o.dir}/tls.key`, o.tls.key);
    await Deno.writeTextFile(
      `${o.dir}/config.yaml`,
      aranyaConfigYaml({
        kubeconfig: o.aranyaKubeconfig,
        namespaces: [ns],
        httpPort,
        websocket: { port: wsPort, certFile: `${o.dir}/tls.crt`, keyFile: `${o.dir}/tls.key` },
        kubelet: { address: "127.0.0.1", port: freePort() },
        api: { qps: 500, burst: 1000 },
        logLevel: o.aranyaLogLevel ?? "warn",
      }),
    );
    aranya = await (o.spawn ?? spawnAranya)({
      config: `${o.dir}/config.yaml`,
      logFile: `${o.dir}/aranya.log`,
    });
    await waitAranyaReady(aranya, httpPort, 60_000);
    // A phase fails at once when aranya dies, instead of at its timeout.
    const died = aranya.exited.then((code) => {
      throw new Error(`aranya exited with code ${code} during the run`);
    });
    died.catch(() => {});
    const orDied = <T>(p: Promise<T>) => Promise.race([p, died]);
    sampler = new MetricsSampler({ url: `http://127.0.0.1:${httpPort}/metrics`, pid: aranya.pid });
    running.push(sampler.run(samplerAc.signal));
    const m0 = await sampler.sample();
    const p0 = await sampler.process(m0);
    o.say(`N=${n}: aranya ready (pid ${aranya.pid}, namespace ${ns}); creating ${n} EdgeDevices`);

    // Create.
    const createdAt = new Map<string, number>();
    const t0 = performance.now();
    await forEachLimit(names, conc, async (name) => {
      await custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns,
        plural: PLURAL,
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: "EdgeDevice", metadata: { name } },
      });
      createdAt.set(name, performance.now());
    });
    const tCreated = performance.now();
    o.say(`N=${n}: creates answered in ${round((tCreated - t0) / 1000, 2)} s; waiting for Ready`);
    const tReady = await orDied(tracker.until(
      `all ${n} Nodes Ready`,
      (c) => c.readyOnce >= n,
      phaseMs,
    ));
    const connectsUntilReady = fleet.stats().connects;
    const m1 = await sampler.sample();
    const p1 = await sampler.process(m1);
    const watchesReady = await apiserverWatches(o.cluster);
    const latencies = names.map((x) => tracker.readyAt.get(x)! - createdAt.get(x)!).sort((a, b) =>
      a - b
    );
    o.say(`N=${n}: all Ready after ${round((tReady - t0) / 1000, 2)} s; deleting`);

    // Delete.
    const t2 = performance.now();
    await forEachLimit(names, conc, async (name) => {
      await custom.deleteNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns,
        plural: PLURAL,
        name,
      });
    });
    const tGone = await orDied(tracker.until(
      `all ${n} Nodes deleted`,
      (c) => c.deleted >= n && c.present === 0,
      phaseMs,
    ));
    const m2 = await sampler.sample();
    const p2 = await sampler.process(m2);
    o.say(`N=${n}: all Nodes gone after ${round((tGone - t2) / 1000, 2)} s`);
    await sleep(2000);
    const leftoverLeases = (await nodeLeases(o.cluster)).filter((x) => wanted.has(x)).length;

    samplerAc.abort();
    const fleetStats = fleet.stats();
    fleetAc.abort();
    await aranya.stop(10_000);
    await sleep(1000);
    const watchesStopped = await apiserverWatches(o.cluster);

    const own = aranyaWatchMetric(m1);
    const openedBy = diff(watchesReady, watchesBefore);
    const closedBy = diff(watchesReady, watchesStopped);
    const watches: WatchFigures = own !== undefined ? { source: "aranya", opened: own } : {
      source: "apiserver",
      opened: total(openedBy),
      closedOnStop: total(closedBy),
      byResource: openedBy,
      closedOnStopByResource: closedBy,
    };
    const writes = (a: PromSample[], b: PromSample[]) =>
      delta(sumOf(a, "aranya_api_writes_total"), sumOf(b, "aranya_api_writes_total"));
    const requests = delta(
      sumOf(m1, "aranya_api_requests_total"),
      sumOf(m0, "aranya_api_requests_total"),
    );
    const cw = writes(m1, m0);
    const dw = writes(m2, m1);
    return {
      devices: n,
      namespace: ns,
      createPerSec: round(n / ((tReady - t0) / 1000)),
      createSeconds: round((tReady - t0) / 1000, 2),
      createCallsSeconds: round((tCreated - t0) / 1000, 2),
      readyLatencyMs: {
        p50: Math.round(pct(latencies, 0.5)),
        p99: Math.round(pct(latencies, 0.99)),
        max: Math.round(latencies[latencies.length - 1] ?? NaN),
      },
      deletePerSec: round(n / ((tGone - t2) / 1000)),
      deleteSeconds: round((tGone - t2) / 1000, 2),
      peakRssMB: sampler.peakRssBytes ? round(sampler.peakRssBytes / MB) : null,
      peakHeapMB: sampler.peakHeapBytes ? round(sampler.peakHeapBytes / MB) : null,
      rssSource: sampler.rssSource,
      cpuSeconds: nullRound(p2.cpuSeconds ?? null, 2),
      createCpuSeconds: nullRound(delta(p1.cpuSeconds, p0.cpuSeconds), 2),
      deleteCpuSeconds: nullRound(delta(p2.cpuSeconds, p1.cpuSeconds), 2),
      writesPerDevice: cw === null ? null : round(cw / n, 2),
      deleteWritesPerDevice: dw === null ? null : round(dw / n, 2),
      requestsPerDevice: requests === null ? null : round(requests / n, 2),
      devicesConnected: sumOf(m1, "aranya_devices_connected") ?? null,
      watches,
      leftoverLeases,
      fleet: {
        connectsUntilReady,
        connects: fleetStats.connects,
        dialFailures: fleetStats.dialFailures,
        commands: fleetStats.commands,
        unsupported: fleetStats.unsupported,
      },
      metricsSamples: sampler.samples,
    };
  } catch (err) {
    const tail = aranya
      ? `\nend of aranya's log (${aranya.logFile}):\n${await aranyaLogTail(aranya)}`
      : "";
    throw new Error(`Scale run with ${n} devices failed: ${errorMessage(err)}${tail}`, {
      cause: err,
    });
  } finally {
    samplerAc.abort();
    fleetAc.abort();
    await aranya?.stop(10_000);
    await Promise.allSettled(running);
    await secrets?.stop().catch(() => {});
    await tracker.stop().catch(() => {});
    await cleanup(o.cluster, ns, names).catch((err) =>
      o.say(`N=${n}: cleanup of namespace ${ns} failed: ${errorMessage(err)}`)
    );
  }
}

function nullRound(x: number | null, d: number): number | null {
  return x === null ? null : round(x, d);
}

/** Names of the Leases in kube-node-lease. */
async function nodeLeases(cluster: ClusterHandle): Promise<string[]> {
  const out = await cluster.kubectlOk([
    "get",
    "leases",
    "-n",
    "kube-node-lease",
    "-o",
    "jsonpath={.items[*].metadata.name}",
  ]);
  return out.split(/\s+/).filter(Boolean);
}

/**
 * Removes what a run left: finalizers of EdgeDevices still there (aranya is
 * stopped by now, so nobody else will), their Nodes and Leases, the namespace.
 */
async function cleanup(cluster: ClusterHandle, ns: string, names: string[]): Promise<void> {
  const left = JSON.parse(await cluster.kubectlOk(["get", "ed", "-n", ns, "-o", "json"]));
  const stuck = left.items.filter((i: { metadata: { finalizers?: string[] } }) =>
    i.metadata.finalizers?.length
  );
  if (stuck.length) {
    for (const i of stuck) i.metadata.finalizers = [];
    await cluster.kubectl(
      ["replace", "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "List", items: stuck }),
    );
  }
  await cluster.kubectl(["delete", "ed", "--all", "-n", ns, "--wait=false"]);
  await cluster.kubectl(["delete", "nodes", "-l", `arhat.dev/namespace=${ns}`, "--wait=false"]);
  const mine = new Set(names);
  const leases = (await nodeLeases(cluster)).filter((x) => mine.has(x));
  if (leases.length) {
    await cluster.kubectl(["delete", "leases", "-n", "kube-node-lease", "--wait=false", ...leases]);
  }
  await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
}
