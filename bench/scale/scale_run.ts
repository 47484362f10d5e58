/**
 * One measurement of aranya at N devices over R replicas (see
 * bench/scale/main.ts for the figures and anchors):
 *
 * 1. a fresh namespace; ONE Node watch (label arhat.dev/namespace=<ns>) and
 *    ONE Secret watch (for the device tokens), both the bench's own, opened
 *    before the API server's watch count is taken as the baseline;
 * 2. R aranya processes (e2e/aranya_harness.ts spawnAranya) with the deploy/
 *    RBAC and the shipped API rate limit (SHIPPED_API), watching only that
 *    namespace, each a member of one membership (`scale-<8 hex>`, identities
 *    r0..r{R-1}, default timers; also for R = 1, as deploy/ ships it), each
 *    with its own websocket and http port and its own kubelet port range
 *    20000 + i*N .. 20000 + (i+1)*N - 1 (so a Node's advertised port names
 *    the replica serving it); every /metrics sampled every 500 ms; the run
 *    starts once every replica sees all R members;
 * 3. create: N EdgeDevices created in parallel (admin client); as each
 *    device's credentials Secret appears (or, with `connect: "node"`, once
 *    its Node exists too) its simulated device dials aranya
 *    (bench/scale/sim_fleet.ts, all in this process; device k dials replica
 *    k % R first, and the next replica when a dial fails or its link closes);
 *    the time runs from the first create until the Node watch has seen all N
 *    Nodes Ready; bound 120 s + 100 ms per device;
 * 4. failover (R > 1 only): replica r0 is SIGKILLed; the time runs until
 *    every Node that advertised a port of r0's range is Ready with a port of
 *    another replica's (they take over once r0's membership Lease expired);
 *    bound 120 s. The commands the simulated devices received meanwhile are
 *    counted: a CMD_POD_DELETE or CMD_POD_ENSURE would be aranya restarting a
 *    pod on a device (`podsRestarted`; the devices run no containers here,
 *    the proof with real containers is the e2e failover test in
 *    e2e/edge_e2e_test.ts);
 * 5. delete: all N EdgeDevices deleted in parallel; the time runs until every
 *    object of the devices is gone: the Nodes (seen through the Node watch),
 *    then, polled every 250 ms with the admin client, the EdgeDevices, the
 *    pods in the namespace (virtual pods), the credentials Secrets (label
 *    arhat.dev/role=EdgeDevice) and the node Leases of the run
 *    (kube-node-lease; aranya deletes them too, or else the garbage collector
 *    would, through their owner references); same bound as create;
 * 6. the replicas and the fleet stop, and whatever is left (Nodes, Leases,
 *    membership Leases, the namespace) is removed, also when a step failed.
 *
 * Any phase fails at once when an aranya process exits that the bench did
 * not kill.
 */
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type V1Secret,
} from "@kubernetes/client-node";
import { credentialsSecretName } from "@aranya/aranya/edgedevice/types";
import { errorMessage, TimeoutError } from "@aranya/common/errors";
import {
  aranyaConfigYaml,
  aranyaLogTail,
  type AranyaProcess,
  SHIPPED_API,
  spawnAranya,
  type SpawnAranyaOptions,
  waitAranyaReady,
} from "@aranya/e2e/aranya_harness";
import { type ClusterHandle, uniqueName } from "@aranya/e2e/fixtures";
import type { TestTls } from "@aranya/e2e/link/test_tls";
import { ensureDir } from "@aranya/e2e/paths";
import { freePort, sleep } from "@aranya/e2e/process";
import { MetricsSampler } from "./metrics_sampler.ts";
import { type NodeState, NodeTracker } from "./node_tracker.ts";
import { forEachLimit } from "./pool.ts";
import { parsePrometheus, type PromSample, sumBy, sumOf } from "./prom.ts";
import { SimFleet } from "./sim_fleet.ts";
import { type ObjectWatch, watchObjects } from "./watch_objects.ts";

const GROUP = "aranya.arhat.dev";
const VERSION = "v1alpha1";
const PLURAL = "edgedevices";
const SECRET_SUFFIX = credentialsSecretName("");
const NODE_LEASES = "kube-node-lease";

/** First kubelet port of replica 0; replica i's range starts at KUBELET_BASE + i*N. */
export const KUBELET_BASE = 20_000;
/** The kubelet port ranges must end below this (the ephemeral ports start above). */
export const KUBELET_LIMIT = 32_000;

/** Throws when R replicas with N ports each do not fit below {@link KUBELET_LIMIT}. */
export function checkKubeletPorts(replicas: number, devices: number): void {
  if (KUBELET_BASE + replicas * devices > KUBELET_LIMIT) {
    throw new RangeError(
      `${replicas} replicas x ${devices} devices need kubelet ports ${KUBELET_BASE}..${
        KUBELET_BASE + replicas * devices - 1
      } (one range of N ports per replica), past ${
        KUBELET_LIMIT - 1
      }: use fewer devices or replicas (R*N <= ${KUBELET_LIMIT - KUBELET_BASE})`,
    );
  }
}

/** Options of {@link runScale}. */
export interface ScaleRunOptions {
  cluster: ClusterHandle;
  /** Admin access, for the bench's own creates, deletes, watches and polls. */
  admin: KubeConfig;
  /** aranya's kubeconfig (e2e/aranya_harness.ts aranyaKubeconfig). */
  aranyaKubeconfig: string;
  tls: TestTls;
  devices: number;
  /** aranya processes (default 1); with more than one, the failover phase runs. */
  replicas?: number;
  /** Work folder of this run (configs, TLS files, aranya's logs). */
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
  /** Limit of the create and of the delete phase, ms (default 120 s + 100 ms per device). */
  phaseTimeoutMs?: number;
  /** Limit of the failover phase, ms (default 120 s). */
  failoverTimeoutMs?: number;
  /** Starts aranya (default: e2e/aranya_harness.ts spawnAranya; a stand-in for testing the bench). */
  spawn?: (opts: SpawnAranyaOptions) => Promise<AranyaProcess>;
}

/** Watches aranya opened, and how they were counted. */
export interface WatchFigures {
  /** "aranya" when aranya exports a watch metric, else "apiserver" (open WATCH requests, before/after). */
  source: "aranya" | "apiserver";
  /**
   * Watches aranya held (all replicas) once all devices were Ready: aranya's
   * metric, else the API server's open WATCH requests that closed when the
   * replicas were killed or stopped (`closedOnKill` + `closedOnStop`).
   */
  opened: number;
  /**
   * Open WATCH requests after all devices were Ready minus before aranya
   * started (apiserver only): equal to `opened` on a settled cluster, more
   * when the control plane's own controllers were still opening theirs.
   */
  openedBeforeAfter?: number;
  /** `opened` / R. */
  perReplica: number;
  /**
   * Watches that closed when aranya stopped (the surviving replicas, after the
   * failover); with `closedOnKill` a cross-check of `opened` (apiserver only).
   */
  closedOnStop?: number;
  /** Watches that closed when r0 was SIGKILLed (apiserver only, R > 1). */
  closedOnKill?: number;
  closedOnKillByResource?: Record<string, number>;
  /** `opened` by resource (apiserver only). */
  byResource?: Record<string, number>;
  /** `closedOnStop` by resource (apiserver only). */
  closedOnStopByResource?: Record<string, number>;
}

/** One replica's figures. */
export interface ReplicaFigures {
  identity: string;
  pid: number;
  /** Its kubelet port range, "first-last". */
  kubeletPorts: string;
  /** RSS once ready, before the first create (the cost of a replica without devices), MB. */
  startRssMB: number | null;
  /** Highest RSS seen, MB (until it was killed, for r0 in the failover). */
  peakRssMB: number | null;
  peakHeapMB: number | null;
  /** aranya_devices_connected once all Nodes were Ready. */
  devicesConnectedAtReady: number | null;
  /** CPU seconds at its end (the kill, or the end of the delete phase). */
  cpuSeconds: number | null;
  /** aranya_api_writes_total delta over the create phase. */
  createWrites: number | null;
  /** The same over the delete phase (null for a killed replica). */
  deleteWrites: number | null;
  /** SIGKILLed in the failover phase. */
  killed: boolean;
}

/** The failover phase (R > 1). */
export interface FailoverFigures {
  /** The replica killed. */
  killed: string;
  /** Nodes that advertised a port of its range when it was killed. */
  devices: number;
  /** SIGKILL until all of them were Ready with another replica's port. */
  seconds: number;
  /** Pod restarts aranya asked of the devices meanwhile (CMD_POD_DELETE + CMD_POD_ENSURE). */
  podsRestarted: number;
  /** Commands the devices received meanwhile, by kind. */
  commands: Record<string, number>;
  /** Successful dials and failed dials meanwhile. */
  connects: number;
  dialFailures: number;
  /** The surviving replicas' aranya_api_writes_total delta over the phase / moved devices. */
  writesPerMovedDevice: number | null;
  /** Nodes per replica identity (by advertised port) at the end of the phase. */
  nodesByReplica: Record<string, number>;
}

/** The figures of one run. */
export interface ScaleResult {
  devices: number;
  replicas: number;
  namespace: string;
  /** The membership name of this run's replicas. */
  membership: string;
  /** Client-side API rate limit of every replica (what deploy/ ships). */
  api: { qps: number; burst: number };
  /** Devices per second from the first create until all Nodes were Ready. */
  createPerSec: number;
  createSeconds: number;
  /** Seconds the creates themselves took (all API calls answered). */
  createCallsSeconds: number;
  /** Per device: from its create call's answer until its Node was first Ready (ms). */
  readyLatencyMs: { p50: number; p99: number; max: number };
  /** Devices per second from the first delete until every object of the devices was gone. */
  deletePerSec: number;
  deleteSeconds: number;
  /** From the first delete until each kind of object was all gone, s. */
  goneSeconds: {
    nodes: number;
    edgeDevices: number;
    pods: number;
    secrets: number;
    leases: number;
  };
  /** Sum over the replicas of their peak RSS, MB. */
  peakRssMB: number | null;
  /** peakRssMB / N * 1000. */
  rssMBPer1000Devices: number | null;
  /** Sum over the replicas of their peak V8 heap in use, MB. */
  peakHeapMB: number | null;
  rssSource: "metrics" | "ps";
  /** CPU time of all replicas over their lives, s. */
  cpuSeconds: number | null;
  createCpuSeconds: number | null;
  /** The surviving replicas' CPU over the delete phase. */
  deleteCpuSeconds: number | null;
  /** Sum of aranya_api_writes_total deltas over the create phase / N; null when missing. */
  writesPerDevice: number | null;
  /** The same over the delete phase. */
  deleteWritesPerDevice: number | null;
  /**
   * Writes by verb per device over the create phase (aranya_api_writes_total
   * has no labels; this is aranya_api_requests_total{verb} of the writing verbs).
   */
  writesByVerbPerDevice: Record<string, number>;
  deleteWritesByVerbPerDevice: Record<string, number>;
  /** aranya_api_requests_total (all verbs) delta over the create phase / N. */
  requestsPerDevice: number | null;
  /** All requests by verb per device over the create phase. */
  requestsByVerbPerDevice: Record<string, number>;
  /** Sum of aranya_devices_connected when all Nodes were Ready. */
  devicesConnected: number | null;
  watches: WatchFigures;
  /** null when R = 1. */
  failover: FailoverFigures | null;
  perReplica: ReplicaFigures[];
  /** The simulated devices: dials, and the commands aranya sent them (by kind; unanswered ones apart). */
  fleet: {
    /** Successful dials until all Nodes were Ready (N when no link dropped). */
    connectsUntilReady: number;
    /** Successful dials per replica until all Nodes were Ready. */
    connectsUntilReadyByReplica: number[];
    /** Failed dials until all Nodes were Ready (the rest: failover, and deleted devices dialing). */
    dialFailuresUntilReady: number;
    connects: number;
    dialFailures: number;
    /** Failed dials by reason. */
    dialFailuresByReason: Record<string, number>;
    commands: Record<string, number>;
    unsupported: Record<string, number>;
  };
  metricsSamples: number;
}

const MB = 1024 * 1024;
const round = (x: number, d = 1) => +x.toFixed(d);
const WRITE_VERBS = new Set(["create", "update", "patch", "delete", "deletecollection"]);

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

/**
 * {@link apiserverWatches} once it stopped changing (three equal reads 1 s
 * apart, at most 30 s): a fresh control plane's controllers open their
 * watches during its first seconds.
 */
async function settledWatches(cluster: ClusterHandle): Promise<Record<string, number>> {
  let last = await apiserverWatches(cluster);
  let same = 0;
  for (let i = 0; i < 30 && same < 2; i++) {
    await sleep(1000);
    const now = await apiserverWatches(cluster);
    same = Object.keys(diff(now, last)).length === 0 ? same + 1 : 0;
    last = now;
  }
  return last;
}

function diff(after: Record<string, number>, before: Record<string, number>) {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(after), ...Object.keys(before)])) {
    const d = (after[k] ?? 0) - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** `a` + `b` by key. */
function addTo(a: Record<string, number>, b: Record<string, number>) {
  for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
  return a;
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

/** Sum of the non-null numbers; null when all are null. */
function sumNull(xs: (number | null | undefined)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === "number");
  return v.length ? v.reduce((a, b) => a + b, 0) : null;
}

const nullRound = (x: number | null, d: number) => x === null ? null : round(x, d);

/** Per-device figure of a by-key record. */
const perDevice = (r: Record<string, number>, n: number) =>
  Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v / n, 2)]));

/** One aranya replica of a run. */
interface Replica {
  index: number;
  identity: string;
  proc: AranyaProcess;
  httpPort: number;
  wsPort: number;
  firstPort: number;
  sampler: MetricsSampler;
  samplerAc: AbortController;
  killed: boolean;
}

/** Runs one measurement; see the module doc. Always stops what it started. */
export async function runScale(o: ScaleRunOptions): Promise<ScaleResult> {
  const n = o.devices;
  const r = o.replicas ?? 1;
  if (!Number.isInteger(r) || r < 1) throw new RangeError(`replicas: ${r} is not a count`);
  checkKubeletPorts(r, n);
  const conc = o.concurrency ?? 64;
  const phaseMs = o.phaseTimeoutMs ?? 120_000 + n * 100;
  const failoverMs = o.failoverTimeoutMs ?? 120_000;
  const ns = uniqueName(`scale-${n}`);
  const membership = `scale-${crypto.randomUUID().replaceAll("-", "").slice(0, 8)}`;
  const names = Array.from({ length: n }, (_, i) => `${ns}-${i}`);
  const indexOf = new Map(names.map((x, i) => [x, i]));
  const wanted = new Set(names);
  const core = o.admin.makeApiClient(CoreV1Api);
  const custom = o.admin.makeApiClient(CustomObjectsApi);
  const coordination = o.admin.makeApiClient(CoordinationV1Api);
  await ensureDir(o.dir);
  const free = distinctFreePorts(2 * r);
  const ports = Array.from({ length: r }, (_, i) => ({ ws: free[2 * i]!, http: free[2 * i + 1]! }));
  const rangeOf = (i: number) => ({
    first: KUBELET_BASE + i * n,
    last: KUBELET_BASE + i * n + n - 1,
  });
  /** The replica whose kubelet range holds `port` (-1: none). */
  const replicaOfPort = (port: number | undefined) =>
    port === undefined || port < KUBELET_BASE || port >= KUBELET_BASE + r * n
      ? -1
      : Math.floor((port - KUBELET_BASE) / n);
  const fleetAc = new AbortController();
  const fleet = new SimFleet({
    urls: ports.map((p) => `wss://localhost:${p.ws}/v1/link`),
    ca: o.tls.ca,
    maxDialing: 64,
  });
  // Tokens by device, until the device was handed to the fleet (then undefined).
  const tokens = new Map<string, string | undefined>();
  const nodes = new Set<string>();
  const maybeStart = (device: string) => {
    const token = tokens.get(device);
    if (token === undefined || (o.connect === "node" && !nodes.has(device))) return;
    tokens.set(device, undefined);
    fleet.add({ namespace: ns, name: device, token, index: indexOf.get(device) });
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
  const replicas: Replica[] = [];
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
    // The bench's own two watches are registered, and a fresh control plane's controllers have
    // opened theirs, before the baseline.
    const watchesBefore = await settledWatches(o.cluster);

    await Deno.writeTextFile(`${o.dir}/tls.crt`, o.tls.cert);
    await Deno.writeTextFile(`${o.dir}/tls.key`, o.tls.key);
    for (let i = 0; i < r; i++) {
      const identity = `r${i}`;
      const config = `${o.dir}/aranya-${identity}.yaml`;
      await Deno.writeTextFile(
        config,
        aranyaConfigYaml({
          kubeconfig: o.aranyaKubeconfig,
          namespaces: [ns],
          httpPort: ports[i]!.http,
          websocket: {
            port: ports[i]!.ws,
            certFile: `${o.dir}/tls.crt`,
            keyFile: `${o.dir}/tls.key`,
          },
          kubelet: { address: "127.0.0.1", port: rangeOf(i).first, portCount: n },
          membership: { name: membership, identity },
          logLevel: o.aranyaLogLevel ?? "warn",
        }),
      );
      const proc = await (o.spawn ?? spawnAranya)({
        config,
        logFile: `${o.dir}/aranya-${identity}.log`,
      });
      replicas.push({
        index: i,
        identity,
        proc,
        httpPort: ports[i]!.http,
        wsPort: ports[i]!.ws,
        firstPort: rangeOf(i).first,
        sampler: new MetricsSampler({
          url: `http://127.0.0.1:${ports[i]!.http}/metrics`,
          pid: proc.pid,
        }),
        samplerAc: new AbortController(),
        killed: false,
      });
    }
    // A phase fails at once when a replica the bench did not kill dies, instead of at its timeout.
    const died = new Promise<never>((_, reject) => {
      for (const x of replicas) {
        x.proc.exited.then((code) => {
          if (!x.killed) {
            reject(
              new Error(
                `aranya ${x.identity} (pid ${x.proc.pid}) exited with code ${code} during the run`,
              ),
            );
          }
        });
      }
    });
    died.catch(() => {});
    const orDied = <T>(p: Promise<T>) => Promise.race([p, died]);
    await orDied(
      Promise.all(replicas.map((x) => waitAranyaReady(x.proc, x.httpPort, 60_000))),
    );
    for (const x of replicas) running.push(x.sampler.run(x.samplerAc.signal));
    // Every replica sees every member before the first create, so shares do not move mid-run.
    await orDied(untilMembers(replicas, r, 60_000));
    const live = () => replicas.filter((x) => !x.killed);
    const sampleAll = (xs: Replica[]) => Promise.all(xs.map((x) => x.sampler.sample()));
    const m0 = await sampleAll(replicas);
    const p0 = await Promise.all(replicas.map((x, i) => x.sampler.process(m0[i])));
    o.say(
      `N=${n} R=${r}: aranya ready (${
        replicas.map((x) => `${x.identity} pid ${x.proc.pid}`).join(", ")
      }; membership ${membership}; namespace ${ns}); creating ${n} EdgeDevices`,
    );

    // Create.
    const createdAt = new Map<string, number>();
    const t0 = performance.now();
    await orDied(forEachLimit(names, conc, async (name) => {
      await custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns,
        plural: PLURAL,
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: "EdgeDevice", metadata: { name } },
      });
      createdAt.set(name, performance.now());
    }));
    const tCreated = performance.now();
    o.say(`N=${n}: creates answered in ${round((tCreated - t0) / 1000, 2)} s; waiting for Ready`);
    const tReady = await orDied(tracker.until(
      `all ${n} Nodes Ready (bound ${phaseMs} ms: 120 s + 100 ms per device)`,
      (c) => c.readyOnce >= n,
      phaseMs,
      () => `fleet: ${JSON.stringify(fleetSummary(fleet))}`,
    ));
    const readyStats = fleet.stats();
    const m1 = await sampleAll(replicas);
    const p1 = await Promise.all(replicas.map((x, i) => x.sampler.process(m1[i])));
    const watchesReady = await apiserverWatches(o.cluster);
    const latencies = names.map((x) => tracker.readyAt.get(x)! - createdAt.get(x)!).sort((a, b) =>
      a - b
    );
    o.say(
      `N=${n}: all Ready after ${round((tReady - t0) / 1000, 2)} s; Nodes by replica ${
        JSON.stringify(nodesByReplica(tracker, replicaOfPort))
      }`,
    );

    // Failover.
    let failover: FailoverFigures | null = null;
    let pDead: number | undefined;
    /** Open WATCH requests that closed when r0 was killed, by resource. */
    let closedOnKill: Record<string, number> | undefined;
    if (r > 1) {
      const victim = replicas[0]!;
      const served = [...tracker.nodes].filter(([, s]) => replicaOfPort(s.port) === 0).map((
        [name],
      ) => name);
      const others = replicas.slice(1);
      const mK = await sampleAll(replicas);
      const watchesBeforeKill = await apiserverWatches(o.cluster);
      pDead = (await victim.sampler.process(mK[0])).cpuSeconds;
      const before = fleet.stats();
      o.say(
        `N=${n}: SIGKILL of ${victim.identity} (pid ${victim.proc.pid}), which serves ${served.length} Nodes`,
      );
      victim.killed = true;
      victim.samplerAc.abort();
      const tKill = performance.now();
      await victim.proc.kill("SIGKILL");
      const moved = (s: NodeState | undefined) =>
        s !== undefined && s.ready && replicaOfPort(s.port) > 0;
      const tBack = await orDied(tracker.until(
        `all ${served.length} Nodes ${victim.identity} served Ready with another replica's port (bound ${failoverMs} ms)`,
        (_, states) => served.every((name) => moved(states.get(name))),
        failoverMs,
        () => {
          const left = served.filter((x) => !moved(tracker.nodes.get(x)));
          // Why the Nodes that are not Ready are not (of every replica, by Ready reason).
          const why: Record<string, number> = {};
          for (const [, st] of tracker.nodes) {
            if (!st.ready) why[st.reason ?? "none"] = (why[st.reason ?? "none"] ?? 0) + 1;
          }
          return `${left.length} not moved yet, e.g. ${
            JSON.stringify(left.slice(0, 5).map((x) => [x, tracker.nodes.get(x) ?? null]))
          }; not Ready by reason: ${JSON.stringify(why)}; fleet: ${
            JSON.stringify(fleetSummary(fleet))
          }`;
        },
      ));
      const after = fleet.stats();
      const mF = await sampleAll(others);
      closedOnKill = diff(watchesBeforeKill, await apiserverWatches(o.cluster));
      const commands = diff(after.commands, before.commands);
      const fw = sumNull(
        others.map((_, i) =>
          delta(
            sumOf(mF[i]!, "aranya_api_writes_total"),
            sumOf(mK[i + 1]!, "aranya_api_writes_total"),
          )
        ),
      );
      failover = {
        killed: victim.identity,
        devices: served.length,
        seconds: round((tBack - tKill) / 1000, 2),
        podsRestarted: (commands.CMD_POD_DELETE ?? 0) + (commands.CMD_POD_ENSURE ?? 0),
        commands,
        connects: after.connects - before.connects,
        dialFailures: after.dialFailures - before.dialFailures,
        writesPerMovedDevice: fw === null || !served.length ? null : round(fw / served.length, 2),
        nodesByReplica: nodesByReplica(tracker, replicaOfPort),
      };
      o.say(
        `N=${n}: failover: ${served.length} Nodes Ready on other replicas ${failover.seconds} s after the SIGKILL; ${
          JSON.stringify(failover.nodesByReplica)
        }`,
      );
    }

    // Delete.
    const survivors = live();
    const mD = await sampleAll(survivors);
    const pD = await Promise.all(survivors.map((x, i) => x.sampler.process(mD[i])));
    const t2 = performance.now();
    await orDied(forEachLimit(names, conc, async (name) => {
      await custom.deleteNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace: ns,
        plural: PLURAL,
        name,
      });
    }));
    const tNodesGone = await orDied(tracker.until(
      `all ${n} Nodes deleted (bound ${phaseMs} ms)`,
      (c) => c.deleted >= n && c.present === 0,
      phaseMs,
    ));
    o.say(
      `N=${n}: all Nodes gone after ${
        round((tNodesGone - t2) / 1000, 2)
      } s; waiting for the EdgeDevices, virtual pods, Secrets and node Leases`,
    );
    const gone = await orDied(untilGone({
      left: {
        edgeDevices: async () =>
          ((await custom.listNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            namespace: ns,
            plural: PLURAL,
          })) as { items: unknown[] }).items.length,
        pods: async () => (await core.listNamespacedPod({ namespace: ns })).items.length,
        secrets: async () =>
          (await core.listNamespacedSecret({
            namespace: ns,
            labelSelector: "arhat.dev/role=EdgeDevice",
          })).items.length,
        leases: async () =>
          (await coordination.listNamespacedLease({ namespace: NODE_LEASES })).items.filter((l) =>
            wanted.has(l.metadata?.name ?? "")
          ).length,
      },
      deadline: t2 + phaseMs,
      intervalMs: 250,
    }));
    const tGone = Math.max(tNodesGone, ...Object.values(gone));
    const m2 = await sampleAll(survivors);
    const p2 = await Promise.all(survivors.map((x, i) => x.sampler.process(m2[i])));
    o.say(`N=${n}: every object of the devices gone after ${round((tGone - t2) / 1000, 2)} s`);

    for (const x of replicas) x.samplerAc.abort();
    const fleetStats = fleet.stats();
    fleetAc.abort();
    for (const x of replicas) x.killed = true; // stopping now is no failure
    await Promise.all(replicas.map((x) => x.proc.stop(10_000)));
    await sleep(1000);
    const watchesStopped = await apiserverWatches(o.cluster);

    const own = sumNull(m1.map((m) => aranyaWatchMetric(m)));
    const openedBy = diff(watchesReady, watchesBefore);
    // r0's watches closed at the kill already: the others' close at the stop.
    const closedBy = diff(
      closedOnKill ? diff(watchesReady, closedOnKill) : watchesReady,
      watchesStopped,
    );
    const watches: WatchFigures = own !== null
      ? { source: "aranya", opened: own, perReplica: round(own / r, 2) }
      : {
        source: "apiserver",
        // The watches that closed as the replicas went away are aranya's own; the before/after
        // difference also counts what a fresh control plane's controllers opened meanwhile.
        opened: total(closedBy) + total(closedOnKill ?? {}),
        perReplica: round((total(closedBy) + total(closedOnKill ?? {})) / r, 2),
        openedBeforeAfter: total(openedBy),
        closedOnStop: total(closedBy),
        ...(closedOnKill ? { closedOnKill: total(closedOnKill) } : {}),
        byResource: openedBy,
        closedOnStopByResource: closedBy,
        ...(closedOnKill ? { closedOnKillByResource: closedOnKill } : {}),
      };
    const writesOf = (m: PromSample[]) => sumOf(m, "aranya_api_writes_total");
    const verbs = (m: PromSample[]) => sumBy(m, "aranya_api_requests_total", "verb");
    const createWrites = replicas.map((_, i) => delta(writesOf(m1[i]!), writesOf(m0[i]!)));
    const deleteWrites = survivors.map((_, i) => delta(writesOf(m2[i]!), writesOf(mD[i]!)));
    const createVerbs: Record<string, number> = {};
    replicas.forEach((_, i) => addTo(createVerbs, diff(verbs(m1[i]!), verbs(m0[i]!))));
    const deleteVerbs: Record<string, number> = {};
    survivors.forEach((_, i) => addTo(deleteVerbs, diff(verbs(m2[i]!), verbs(mD[i]!))));
    const onlyWrites = (v: Record<string, number>) =>
      Object.fromEntries(Object.entries(v).filter(([k]) => WRITE_VERBS.has(k)));
    const cw = sumNull(createWrites);
    const dw = sumNull(deleteWrites);
    const requests = sumNull(
      replicas.map((_, i) =>
        delta(
          sumOf(m1[i]!, "aranya_api_requests_total"),
          sumOf(m0[i]!, "aranya_api_requests_total"),
        )
      ),
    );
    const endCpu = replicas.map((x, i) => {
      if (failover && i === 0) return pDead ?? null;
      const j = survivors.indexOf(x);
      return j < 0 ? null : p2[j]!.cpuSeconds ?? null;
    });
    const peakRss = sumNull(replicas.map((x) => x.sampler.peakRssBytes || null));
    const peakHeap = sumNull(replicas.map((x) => x.sampler.peakHeapBytes || null));
    const perReplica: ReplicaFigures[] = replicas.map((x, i) => {
      const j = survivors.indexOf(x);
      const killed = failover !== null && i === 0;
      return {
        identity: x.identity,
        pid: x.proc.pid,
        kubeletPorts: `${rangeOf(i).first}-${rangeOf(i).last}`,
        startRssMB: p0[i]!.rssBytes === undefined ? null : round(p0[i]!.rssBytes! / MB),
        peakRssMB: x.sampler.peakRssBytes ? round(x.sampler.peakRssBytes / MB) : null,
        peakHeapMB: x.sampler.peakHeapBytes ? round(x.sampler.peakHeapBytes / MB) : null,
        devicesConnectedAtReady: sumOf(m1[i]!, "aranya_devices_connected") ?? null,
        cpuSeconds: nullRound(endCpu[i] ?? null, 2),
        createWrites: createWrites[i] ?? null,
        deleteWrites: killed || j < 0 ? null : deleteWrites[j] ?? null,
        killed,
      };
    });
    return {
      devices: n,
      replicas: r,
      namespace: ns,
      membership,
      api: SHIPPED_API,
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
      goneSeconds: {
        nodes: round((tNodesGone - t2) / 1000, 2),
        edgeDevices: round((gone.edgeDevices - t2) / 1000, 2),
        pods: round((gone.pods - t2) / 1000, 2),
        secrets: round((gone.secrets - t2) / 1000, 2),
        leases: round((gone.leases - t2) / 1000, 2),
      },
      peakRssMB: peakRss === null ? null : round(peakRss / MB),
      rssMBPer1000Devices: peakRss === null ? null : round(peakRss / MB / n * 1000),
      peakHeapMB: peakHeap === null ? null : round(peakHeap / MB),
      rssSource: replicas.some((x) => x.sampler.rssSource === "ps") ? "ps" : "metrics",
      cpuSeconds: nullRound(sumNull(endCpu), 2),
      createCpuSeconds: nullRound(
        sumNull(replicas.map((_, i) => delta(p1[i]!.cpuSeconds, p0[i]!.cpuSeconds))),
        2,
      ),
      deleteCpuSeconds: nullRound(
        sumNull(survivors.map((_, i) => delta(p2[i]!.cpuSeconds, pD[i]!.cpuSeconds))),
        2,
      ),
      writesPerDevice: cw === null ? null : round(cw / n, 2),
      deleteWritesPerDevice: dw === null ? null : round(dw / n, 2),
      writesByVerbPerDevice: perDevice(onlyWrites(createVerbs), n),
      deleteWritesByVerbPerDevice: perDevice(onlyWrites(deleteVerbs), n),
      requestsPerDevice: requests === null ? null : round(requests / n, 2),
      requestsByVerbPerDevice: perDevice(createVerbs, n),
      devicesConnected: sumNull(m1.map((m) => sumOf(m, "aranya_devices_connected"))),
      watches,
      failover,
      perReplica,
      fleet: {
        connectsUntilReady: readyStats.connects,
        connectsUntilReadyByReplica: readyStats.connectsByUrl,
        dialFailuresUntilReady: readyStats.dialFailures,
        connects: fleetStats.connects,
        dialFailures: fleetStats.dialFailures,
        dialFailuresByReason: fleetStats.dialFailuresByReason,
        commands: fleetStats.commands,
        unsupported: fleetStats.unsupported,
      },
      metricsSamples: replicas.reduce((a, x) => a + x.sampler.samples, 0),
    };
  } catch (err) {
    const tails: string[] = [];
    for (const x of replicas) {
      tails.push(
        `\nend of aranya ${x.identity}'s log (${x.proc.logFile}):\n${await aranyaLogTail(
          x.proc,
          r > 1 ? 20 : 40,
        )}`,
      );
    }
    const msg = `Scale run with ${n} devices over ${r} replicas failed: ${errorMessage(err)}${
      tails.join("")
    }`;
    throw err instanceof TimeoutError
      ? new TimeoutError(msg, { cause: err })
      : new Error(msg, { cause: err });
  } finally {
    fleetAc.abort();
    for (const x of replicas) {
      x.samplerAc.abort();
      x.killed = true;
    }
    await Promise.all(replicas.map((x) => x.proc.stop(10_000)));
    await Promise.allSettled(running);
    await secrets?.stop().catch(() => {});
    await tracker.stop().catch(() => {});
    await cleanup(o.cluster, coordination, ns, names, membership).catch((err) =>
      o.say(`N=${n}: cleanup of namespace ${ns} failed: ${errorMessage(err)}`)
    );
  }
}

/** `count` free ports on 127.0.0.1, all different (freePort may hand out one twice). */
function distinctFreePorts(count: number): number[] {
  const out = new Set<number>();
  for (let tries = 0; out.size < count; tries++) {
    if (tries > count * 20) throw new Error(`Could not find ${count} distinct free ports`);
    out.add(freePort());
  }
  return [...out];
}

/** A short view of the fleet for error messages. */
function fleetSummary(fleet: SimFleet) {
  const s = fleet.stats();
  return {
    devices: s.devices,
    connected: s.connected,
    connectedByReplica: s.connectedByUrl,
    connects: s.connects,
    dialFailures: s.dialFailures,
  };
}

/** Present Nodes by the replica their advertised port names ("none": no port in any range). */
function nodesByReplica(
  tracker: NodeTracker,
  replicaOfPort: (port: number | undefined) => number,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of tracker.nodes.values()) {
    const i = replicaOfPort(s.port);
    const k = i < 0 ? "none" : `r${i}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

/** Waits until every replica's aranya_replica_members is `r`. */
async function untilMembers(replicas: Replica[], r: number, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  let seen: (number | undefined)[] = [];
  while (performance.now() < end) {
    seen = await Promise.all(
      replicas.map((x) =>
        x.sampler.sample().then((m) => sumOf(m, "aranya_replica_members"), () => undefined)
      ),
    );
    if (seen.every((v) => v === r)) return;
    await sleep(250);
  }
  throw new TimeoutError(
    `Timed out after ${timeoutMs} ms waiting for every replica to see ${r} members; aranya_replica_members: ${
      JSON.stringify(Object.fromEntries(replicas.map((x, i) => [x.identity, seen[i] ?? null])))
    }`,
  );
}

/**
 * Polls each kind every `intervalMs` until all were seen empty (a kind once
 * empty is not asked again, until a last round asks them all once more);
 * resolves with the time (performance.now()) each was first seen empty.
 * TimeoutError at `deadline`, naming what is left.
 */
async function untilGone<K extends string>(o: {
  left: Record<K, () => Promise<number>>;
  deadline: number;
  intervalMs: number;
}): Promise<Record<K, number>> {
  const kinds = Object.keys(o.left) as K[];
  const goneAt = new Map<K, number>();
  const counts = new Map<K, number>();
  while (true) {
    for (const k of kinds) {
      if (goneAt.has(k)) continue;
      const c = await o.left[k]();
      counts.set(k, c);
      if (c === 0) goneAt.set(k, performance.now());
    }
    if (goneAt.size === kinds.length) {
      // Nothing came back (a late write re-creating a Lease, say).
      let again = false;
      for (const k of kinds) {
        const c = await o.left[k]();
        counts.set(k, c);
        if (c !== 0) {
          goneAt.delete(k);
          again = true;
        }
      }
      if (!again) return Object.fromEntries(goneAt) as Record<K, number>;
    }
    if (performance.now() >= o.deadline) {
      throw new TimeoutError(
        `Timed out waiting for every object of the devices to be gone; left: ${
          JSON.stringify(Object.fromEntries(counts))
        }`,
      );
    }
    await sleep(o.intervalMs);
  }
}

/**
 * Removes what a run left (the replicas are stopped by now): EdgeDevices,
 * their Nodes and node Leases, the membership Leases (a SIGKILLed replica
 * leaves its own), the namespace.
 */
async function cleanup(
  cluster: ClusterHandle,
  coordination: CoordinationV1Api,
  ns: string,
  names: string[],
  membership: string,
): Promise<void> {
  await cluster.kubectl(["delete", "ed", "--all", "-n", ns, "--wait=false"]);
  await cluster.kubectl(["delete", "nodes", "-l", `arhat.dev/namespace=${ns}`, "--wait=false"]);
  // Through the API client, 32 at a time: kubectl deletes one by one at 5 requests/s.
  const mine = new Set(names);
  const leases = (await coordination.listNamespacedLease({ namespace: NODE_LEASES })).items
    .map((l) => l.metadata?.name ?? "").filter((x) => mine.has(x));
  await forEachLimit(leases, 32, async (name) => {
    await coordination.deleteNamespacedLease({ name, namespace: NODE_LEASES }).catch(() => {});
  });
  await cluster.kubectl([
    "delete",
    "leases",
    "-n",
    "aranya-system",
    "-l",
    `aranya.arhat.dev/membership=${membership}`,
    "--ignore-not-found",
    "--wait=false",
  ]);
  await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
}
