/**
 * `deno task bench:stream [--runs 5] [--round-trips 200] [--warmup 20] [--blob-mib 64]
 * [--pod-starts 20] [--settle-seconds 5] [--arhat-v8-flags "--a,--b" | none]`: the
 * kubelet API's streams, pod start and node memory of an aranya node, each
 * beside a real kubelet node in the same run and on the same control plane,
 * plus the stream anchors against the container engine reached directly.
 * --arhat-v8-flags runs arhat with other V8 flags than the shipped ones (none:
 * V8's defaults), to measure what they cost.
 *
 * The two nodes: the device node (the built kubectl -> the real kube-apiserver
 * -> the real aranya process (deploy/ RBAC, kubelet API on the advertised
 * address, deploy/'s settings) -> the shipped arhat (its bundle, permission
 * set and V8 flags) over its websocket link -> Podman; shipped_node.ts), and
 * its peer, a worker node (peer_node.ts: the
 * kubelet built from the pinned module, Debian's containerd and runc, a CNI
 * bridge; e2e/cluster/worker_node.ts). Every pod is the same spec on both,
 * placed with `nodeName` (and the worker's toleration). The control plane and
 * services come from `useCluster` / `useServices` (the running ones named by
 * ARANYA_TEST_KUBECONFIG and the ARANYA_TEST_* variables, else fresh ones,
 * stopped at the end, also on failure or SIGINT/SIGTERM); the worker node is
 * attached and dies with this process.
 *
 * - exec round trip: one interactive `kubectl exec -i tools -c main -- cat`
 *   per node; a short line written, timed until it is back on stdout;
 *   --warmup untimed, then --round-trips timed; p50/p99. With
 *   KUBECTL_REMOTE_COMMAND_WEBSOCKETS true (kubectl's default, WebSocket to
 *   the API server) and false (SPDY). Anchor on the aranya node: the same
 *   echo through one exec session of the engine's own API
 *   (`/containers/{id}/exec` + hijacked `/exec/{id}/start` on the Podman
 *   socket), same counts.
 * - port-forward throughput: `kubectl port-forward pod/<tools> <local>:8080`,
 *   the pod's busybox httpd serving a random --blob-mib MiB blob, downloaded
 *   --runs times (after one untimed download), byte count checked, median
 *   MB/s; with KUBECTL_PORT_FORWARD_WEBSOCKETS true and false, per node.
 *   Anchors: arhat dials a pod's own address from the device host (pods get
 *   one on the engine's default network), so the direct path is an HTTP
 *   download from the host to the pod's IP, without anything above it (and
 *   the same to the kubelet peer's pod, whose address the host reaches over
 *   the worker's bridge); an engine exec of `nc 127.0.0.1 8080` in the pod's
 *   infra container, fed the same GET, is arhat's path for a pod without an
 *   address (network "none"); and the in-pod ceiling.
 * - pod start (pod_start.ts): after the tools pods are deleted, --pod-starts
 *   pods per node created through the API one at a time, the nodes taking
 *   turns, timed from the POST until a watch delivers the pod Running;
 *   p50/p99 per node.
 * - node memory (node_memory.ts): PSS and RSS sums from /proc of the kubelet
 *   side (every process in the worker's PID namespace: kubelet, containerd,
 *   shims, pause and container processes) and of the aranya side (arhat, the
 *   Podman service, the conmon and container processes of the measured
 *   pods), with the first pod-start pod of each node running and with all
 *   --pod-starts of them, each after --settle-seconds of quiet. This comes
 *   after the streams, so arhat's, aranya's and the kubelet's heaps hold what
 *   the downloads left there, as on a node that served port-forwards. aranya's
 *   own process is reported apart (shared by every device).
 *
 * Each figure is printed beside the kubelet node's with the ratio aranya /
 * kubelet (port-forward: below x1 is slower; the others: below x1 is
 * better; memory ratios of PSS, RSS beside). Figures and machine info go to
 * stdout, progress to stderr; the last line on stdout is one JSON object
 * whose flat `summary` (side_by_side.ts) holds exec_p50_ratio_ws,
 * exec_p50_ratio_spdy, exec_p99_ratio_spdy, portforward_ratio_ws,
 * portforward_ratio_spdy, pod_start_p99_ratio, node_mem_ratio_<N>_pods (N =
 * --pod-starts) and the raw figures; the nested figures follow. The exit code
 * is 1, with the reasons under `errors`, when any figure could not be
 * measured; every wait is bounded.
 */
import { parseArgs } from "node:util";
import { KubeHttp } from "@aranya/aranya/kube/kube_http";
import { loadKubeConfig } from "@aranya/aranya/kube/kubeconfig";
import { errorMessage } from "@aranya/common/errors";
import type { WorkerNode } from "@aranya/e2e/cluster/worker_node";
import type { World } from "@aranya/e2e/edge_world";
import { eventually } from "@aranya/e2e/fixtures";
import { freePort, sleep } from "@aranya/e2e/process";
import { inBenchWorld } from "../bench_world.ts";
import { startShippedNode } from "./shipped_node.ts";
import { machineInfo } from "../machine.ts";
import { EchoTimer } from "./echo.ts";
import { engineExec, engineHttpGet, inPodHttpGet } from "./engine.ts";
import { kubectlPortForward } from "@aranya/e2e/kubectl_child";
import { kubectlCat, worldAt } from "./kubectl.ts";
import {
  aranyaSideMemory,
  kubeletSideMemory,
  type MemoryFigure,
  processMemory,
} from "./node_memory.ts";
import { placed, type Placement, startPeerNode } from "./peer_node.ts";
import { podStarts } from "./pod_start.ts";
import { type PeerFigures, peerLines, peerSummary, requiredKeys } from "./side_by_side.ts";
import { type Latency, latency, mbPerSec, median, ratio, round, show, showRatio } from "./stats.ts";

const say = (s: string) => console.error(`[bench:stream] ${s}`);

function flags() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "5" },
      "round-trips": { type: "string", default: "200" },
      warmup: { type: "string", default: "20" },
      "blob-mib": { type: "string", default: "64" },
      "pod-starts": { type: "string", default: "20" },
      "settle-seconds": { type: "string", default: "5" },
      "arhat-v8-flags": { type: "string" },
    },
    strict: true,
  });
  const count = (name: keyof typeof values, min: number) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${name}: "${values[name]}" is not a whole number >= ${min}`);
    }
    return n;
  };
  return {
    runs: count("runs", 1),
    roundTrips: count("round-trips", 1),
    warmup: count("warmup", 0),
    blobMiB: count("blob-mib", 1),
    podStarts: count("pod-starts", 1),
    settleSeconds: count("settle-seconds", 0),
    /** arhat's V8 flags instead of the shipped ones (to measure them); undefined: shipped. */
    arhatV8Flags: values["arhat-v8-flags"] === undefined
      ? undefined
      : values["arhat-v8-flags"] === "none"
      ? []
      : values["arhat-v8-flags"].split(","),
  };
}

type Flags = ReturnType<typeof flags>;

/** The tools pod's name on each node. */
const TOOLS = { aranya: "tools", kubelet: "tools-kubelet" } as const;

/**
 * Pod "tools" (on the kubelet node "tools-kubelet"): `main` idles (exec
 * target), `web` serves /www/blob of `bytes` random bytes.
 */
function toolsPod(p: Placement, image: string, bytes: number): string {
  const c = (name: string, script: string) => ({
    name,
    image,
    imagePullPolicy: "IfNotPresent",
    command: ["sh", "-c", script],
  });
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: TOOLS[p.side] },
    spec: placed({
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 1,
      containers: [
        c("main", "while true; do sleep 3600; done"),
        c(
          "web",
          `mkdir -p /www && head -c ${bytes} /dev/urandom > /www/blob && ` +
            "wc -c < /www/blob > /www/blob.size && exec httpd -f -p 8080 -h /www",
        ),
      ],
    }, p),
  });
}

/** Waits until pod `name` has both containers running and its blob written; returns the pod. */
// deno-lint-ignore no-explicit-any
async function toolsReady(w: World, name: string, blobBytes: number): Promise<any> {
  // deno-lint-ignore no-explicit-any
  const pod: any = await eventually(`pod ${name} Running`, async () => {
    const p = await w.json(["get", "pod", name]);
    const running = (p.status?.containerStatuses ?? []).filter((
      c: { state?: { running?: unknown } },
    ) => c.state?.running);
    return running.length === 2 ? p : undefined;
  }, 120_000);
  const size = await eventually(`the blob of ${name} written`, async () => {
    // -n before "--" (World.kubectl appends it, which would pass it to the command).
    const s = (await w.cluster.kubectlOk([
      "-n",
      w.ns,
      "exec",
      name,
      "-c",
      "web",
      "--",
      "cat",
      "/www/blob.size",
    ])).trim();
    return s ? Number(s) : undefined;
  }, 120_000);
  if (size !== blobBytes) {
    throw new Error(`The blob of ${name} has ${size} bytes, not ${blobBytes}`);
  }
  return pod;
}

/** The Podman container ids of pod `uid` (infra and app), optionally of one role/container. */
async function containerIds(w: World, uid: string, extra: Record<string, string> = {}) {
  return (await w.engine.containers({ "arhat.dev/pod-uid": uid, ...extra })).map((c) => c.Id);
}

/**
 * Sets up aranya with one device on Podman and the worker node, and pod tools
 * on each; returns what the measurements need.
 */
async function setUp(
  w: World,
  blobBytes: number,
  podRoom: number,
  started: { worker?: WorkerNode },
  arhatV8Flags: readonly string[] | undefined,
) {
  const { node, arhatPid } = await startShippedNode(w, podRoom + 1, arhatV8Flags);
  say(`device ${w.ns}/${node} Ready; starting the kubelet peer (worker node)`);
  const worker = started.worker = await startPeerNode(w, say);
  const sides: Placement[] = [
    { side: "aranya", node },
    { side: "kubelet", node: worker.nodeName },
  ];
  say(`worker node ${worker.nodeName} Ready; creating the tools pods (${blobBytes}-byte blob)`);
  for (const p of sides) {
    await w.kubectl(["apply", "-f", "-"], toolsPod(p, w.services.endpoints.testImage, blobBytes));
  }
  const pod = await toolsReady(w, TOOLS.aranya, blobBytes);
  const peerPod = await toolsReady(w, TOOLS.kubelet, blobBytes);
  const uid = pod.metadata.uid as string;
  const [mainId] = await containerIds(w, uid, {
    "arhat.dev/role": "app",
    "arhat.dev/container-name": "main",
  });
  const [infraId] = await containerIds(w, uid, { "arhat.dev/role": "infra" });
  if (!mainId || !infraId) throw new Error(`The engine has no main/infra container of pod ${uid}`);
  // The pods' own addresses: arhat dials its pod's from the device host, as this bench can.
  const podIPs = {
    aranya: pod.status?.podIP as string | undefined,
    kubelet: peerPod.status?.podIP as string | undefined,
  };
  return { sides, worker, mainId, infraId, podIPs, arhatPid };
}

async function echoRun(
  open: () => Promise<ConstructorParameters<typeof EchoTimer>[0]>,
  tag: string,
  f: Flags,
): Promise<number[]> {
  const timer = new EchoTimer(await open());
  try {
    return await timer.run(f.roundTrips, f.warmup, tag);
  } finally {
    await timer.close();
  }
}

async function download(url: string): Promise<{ bytes: number; ms: number; status: number }> {
  const t0 = performance.now();
  const res = await fetch(url, { signal: AbortSignal.timeout(300_000) });
  let bytes = 0;
  for await (const c of res.body!) bytes += c.length;
  return { bytes, ms: performance.now() - t0, status: res.status };
}

async function throughput(
  get: () => Promise<{ bytes: number; ms: number; status: number }>,
  blobBytes: number,
  runs: number,
  what: string,
): Promise<{ mbPerSec: number | null; runs: number[] }> {
  const out: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const r = await get();
    if (r.status !== 200 || r.bytes !== blobBytes) {
      throw new Error(`${what}: status ${r.status}, ${r.bytes} bytes instead of ${blobBytes}`);
    }
    if (i > 0) out.push(round(mbPerSec(r.bytes, r.ms), 4)!); // the first is a warm-up
  }
  return { mbPerSec: round(median(out), 4), runs: out };
}

type Attempt = <T>(key: string, fn: () => Promise<T>) => Promise<T | undefined>;

const MODES = [["websocket", "true"], ["spdy", "false"]] as const;

/** exec echo and port-forward through kubectl on one node's tools pod. */
async function kubectlStreams(
  w: World,
  pod: string,
  tag: string,
  f: Flags,
  blobBytes: number,
  attempt: Attempt,
) {
  const exec: Record<string, Latency> = {};
  for (const [mode, ws] of MODES) {
    const s = await attempt(`exec/${tag}/${mode}`, () =>
      echoRun(
        () =>
          Promise.resolve(kubectlCat(w, pod, "main", { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: ws })),
        `${tag}-${mode}`,
        f,
      ));
    if (s) exec[mode] = latency(s);
  }
  const portForward: Record<string, { mbPerSec: number | null; runs: number[] }> = {};
  for (const [mode, ws] of MODES) {
    const r = await attempt(`portForward/${tag}/${mode}`, async () => {
      const pf = await kubectlPortForward(worldAt(w), `pod/${pod}`, freePort(), 8080, {
        KUBECTL_PORT_FORWARD_WEBSOCKETS: ws,
      });
      try {
        return await throughput(
          () => download(`http://127.0.0.1:${pf.localPort}/blob`),
          blobBytes,
          f.runs,
          `${tag} ${mode}`,
        );
      } catch (err) {
        throw new Error(`${errorMessage(err)}; kubectl said: ${pf.output().trim().slice(-500)}`);
      } finally {
        await pf.stop();
      }
    });
    if (r) portForward[mode] = r;
  }
  return { exec, portForward };
}

/** Deletes the tools pods and waits (bounded) until they and their engine containers are gone. */
async function deleteTools(w: World, aranyaUid: string): Promise<void> {
  await w.kubectl(["delete", "pod", TOOLS.aranya, TOOLS.kubelet, "--wait=false"]);
  await eventually("the tools pods to be gone", async () => {
    const list = await w.json(["get", "pods"]);
    const left = list.items.filter((p: { metadata: { name: string } }) =>
      p.metadata.name === TOOLS.aranya || p.metadata.name === TOOLS.kubelet
    );
    return left.length === 0 && (await containerIds(w, aranyaUid)).length === 0 || undefined;
  }, 90_000);
}

async function measure(w: World, f: Flags, errors: Record<string, string>) {
  const blobBytes = f.blobMiB << 20;
  const started: { worker?: WorkerNode } = {};
  try {
    return await measureWith(w, f, errors, blobBytes, started);
  } finally {
    await started.worker?.stop().catch((e) => say(`stopping the worker: ${errorMessage(e)}`));
  }
}

async function measureWith(
  w: World,
  f: Flags,
  errors: Record<string, string>,
  blobBytes: number,
  started: { worker?: WorkerNode },
) {
  const { sides, worker, mainId, infraId, podIPs, arhatPid } = await setUp(
    w,
    blobBytes,
    f.podStarts,
    started,
    f.arhatV8Flags,
  );
  const attempt: Attempt = async (key, fn) => {
    try {
      return await fn();
    } catch (err) {
      errors[key] = errorMessage(err);
      say(`${key} failed: ${errorMessage(err)}`);
      return undefined;
    }
  };

  // The engine anchors (aranya node only).
  say(`exec: ${f.warmup} warm-up + ${f.roundTrips} round trips per path`);
  const direct = await attempt(
    "exec/direct",
    () => echoRun(() => engineExec(w.engine, mainId, ["cat"]), "direct", f),
  );
  const directLat = direct ? latency(direct) : undefined;
  say(`port-forward: 1 warm-up + ${f.runs} downloads of ${blobBytes} bytes per path`);
  const pfDirect = await attempt("portForward/direct", () =>
    throughput(
      () => engineHttpGet(w.engine, infraId, 8080, "/blob"),
      blobBytes,
      f.runs,
      "direct",
    ));
  // The path arhat takes for a pod with an address (a TCP connection from the device host to
  // the pod's IP), without anything above it; and the same to the kubelet peer's pod.
  const podAddress = async (ip: string | undefined, what: string) => {
    if (!ip) throw new Error(`The ${what} tools pod has no status.podIP`);
    return await throughput(
      () => download(`http://${ip}:8080/blob`),
      blobBytes,
      f.runs,
      `${what} pod address`,
    );
  };
  const pfPodIP = await attempt(
    "portForward/podAddress",
    () => podAddress(podIPs.aranya, "aranya"),
  );
  const pfPeerPodIP = await attempt(
    "portForward/peerPodAddress",
    () => podAddress(podIPs.kubelet, "kubelet"),
  );
  const inPod = await attempt("portForward/inPod", () =>
    throughput(
      () => inPodHttpGet(w.engine, mainId, 8080, "/blob"),
      blobBytes,
      f.runs,
      "in-pod",
    ));

  // Through kubectl and the API server, per node.
  say("kubectl streams on the aranya node");
  const aranyaStreams = await kubectlStreams(w, TOOLS.aranya, "aranya", f, blobBytes, attempt);
  say("kubectl streams on the kubelet node");
  const kubeletStreams = await kubectlStreams(w, TOOLS.kubelet, "kubelet", f, blobBytes, attempt);

  // The tools pods go; pod start and memory use pods of one shape on both nodes.
  const toolsUid = (await w.json(["get", "pod", TOOLS.aranya])).metadata.uid as string;
  await deleteTools(w, toolsUid);
  const api = new KubeHttp(loadKubeConfig({ kubeconfig: w.cluster.kubeconfig }));
  const aranyaNode = sides[0]!.node;
  const memory: { aranya: Record<string, MemoryFigure>; kubelet: Record<string, MemoryFigure> } = {
    aranya: {},
    kubelet: {},
  };
  let aranyaProcess: MemoryFigure | undefined;
  const sample = async (n: number) => {
    if (n !== 1 && n !== f.podStarts) return;
    const which = n === 1 ? "one" : "many";
    if (f.settleSeconds) await sleep(f.settleSeconds * 1000);
    const pods = (await w.json(["get", "pods"])).items as {
      metadata: { uid: string };
      spec: { nodeName?: string };
    }[];
    const ids: string[] = [];
    for (const p of pods.filter((p) => p.spec.nodeName === aranyaNode)) {
      ids.push(...await containerIds(w, p.metadata.uid));
    }
    const a = await attempt(
      `memory/aranya/${n}`,
      () => aranyaSideMemory(arhatPid, w.services.endpoints.podmanSocket, ids),
    );
    if (a) memory.aranya[which] = a;
    const k = await attempt(`memory/kubelet/${n}`, () => kubeletSideMemory(worker.pids.containerd));
    if (k) memory.kubelet[which] = k;
    if (n === f.podStarts) {
      aranyaProcess = await attempt("memory/aranyaProcess", () => processMemory(w.aranyas[0]!.pid));
    }
    say(`memory with ${n} pod(s) per node sampled (${ids.length} engine containers on Podman)`);
  };
  say(`pod start: ${f.podStarts} pods per node, one at a time, nodes taking turns`);
  const starts = await attempt("podStart", () =>
    podStarts({
      api,
      ns: w.ns,
      image: w.services.endpoints.testImage,
      sides,
      count: f.podStarts,
      timeoutMs: 120_000,
      onRunning: sample,
      say,
    })).finally(() => api.close());
  if (!starts) console.error(await w.tails());

  const peer: PeerFigures = {
    pods: f.podStarts,
    aranyaProcess,
    aranya: {
      exec: aranyaStreams.exec,
      portForward: {
        websocket: aranyaStreams.portForward.websocket?.mbPerSec,
        spdy: aranyaStreams.portForward.spdy?.mbPerSec,
      },
      podStart: starts ? latency(starts.aranya) : undefined,
      memory: memory.aranya,
    },
    kubelet: {
      exec: kubeletStreams.exec,
      portForward: {
        websocket: kubeletStreams.portForward.websocket?.mbPerSec,
        spdy: kubeletStreams.portForward.spdy?.mbPerSec,
      },
      podStart: starts ? latency(starts.kubelet) : undefined,
      memory: memory.kubelet,
    },
  };
  const exec: Record<string, unknown> = { direct: directLat };
  for (const [mode] of MODES) {
    const l = aranyaStreams.exec[mode];
    if (!l) continue;
    exec[mode] = {
      ...l,
      ratioP50: round(ratio(l.p50Ms, directLat?.p50Ms ?? null)),
      ratioP99: round(ratio(l.p99Ms, directLat?.p99Ms ?? null)),
    };
  }
  const portForward: Record<string, unknown> = {
    direct: pfDirect,
    podAddress: pfPodIP,
    peerPodAddress: pfPeerPodIP,
    inPod,
  };
  for (const [mode] of MODES) {
    const r = aranyaStreams.portForward[mode];
    if (r) {
      portForward[mode] = {
        ...r,
        ratio: round(ratio(r.mbPerSec, pfDirect?.mbPerSec ?? null)),
        ratioPodAddress: round(ratio(r.mbPerSec, pfPodIP?.mbPerSec ?? null)),
      };
    }
  }
  return {
    blobBytes,
    worker: { node: worker.nodeName, readySeconds: round(worker.readySeconds) },
    exec,
    portForward,
    peer,
    kubelet: {
      exec: kubeletStreams.exec,
      portForward: kubeletStreams.portForward,
      podStartMs: starts?.kubelet.map((x) => round(x, 4)),
    },
    podStartMs: { aranya: starts?.aranya.map((x) => round(x, 4)) },
  };
}

type ExecFigures = Latency & { ratioP50: number | null; ratioP99: number | null };

function report(out: Awaited<ReturnType<typeof measure>>, f: Flags): string[] {
  const lines: string[] = [];
  const d = out.exec.direct as Latency | undefined;
  lines.push(
    `exec round trip, direct (engine exec API on the Podman socket, one \`cat\` session): p50 ${
      show(d?.p50Ms ?? null, " ms")
    }, p99 ${show(d?.p99Ms ?? null, " ms")}`,
  );
  for (const mode of ["websocket", "spdy"]) {
    const e = out.exec[mode] as ExecFigures | undefined;
    lines.push(
      `exec round trip, kubectl exec -i (${mode}) -> API server -> aranya -> arhat -> Podman: p50 ${
        show(e?.p50Ms ?? null, " ms")
      } (${showRatio(e?.ratioP50 ?? null)} direct), p99 ${show(e?.p99Ms ?? null, " ms")} (${
        showRatio(e?.ratioP99 ?? null)
      } direct)`,
    );
  }
  const pd = out.portForward.direct as { mbPerSec: number | null } | undefined;
  lines.push(
    `port-forward download, engine exec of \`nc 127.0.0.1 8080\` in the pod's infra container (arhat's path for a pod without an address): ${
      show(pd?.mbPerSec ?? null, " MB/s")
    }`,
  );
  const pa = out.portForward.podAddress as { mbPerSec: number | null } | undefined;
  const ppa = out.portForward.peerPodAddress as { mbPerSec: number | null } | undefined;
  lines.push(
    `port-forward download, direct: HTTP from the device host to the pod's address (arhat's path for a pod with one): ${
      show(pa?.mbPerSec ?? null, " MB/s")
    }; the same to the kubelet peer's pod: ${show(ppa?.mbPerSec ?? null, " MB/s")}`,
  );
  const ip = out.portForward.inPod as { mbPerSec: number | null } | undefined;
  lines.push(
    `port-forward download, in-pod ceiling (wget over the pod's loopback, timed inside at 10 ms resolution; no host path): ${
      show(ip?.mbPerSec ?? null, " MB/s")
    }`,
  );
  for (const mode of ["websocket", "spdy"]) {
    const p = out.portForward[mode] as
      | { mbPerSec: number | null; ratio: number | null; ratioPodAddress: number | null }
      | undefined;
    lines.push(
      `port-forward download, kubectl port-forward (${mode}) -> API server -> aranya -> arhat -> the pod's address: ${
        show(p?.mbPerSec ?? null, " MB/s")
      } (${showRatio(p?.ratioPodAddress ?? null)} of direct to the pod's address, ${
        showRatio(p?.ratio ?? null)
      } of the nc exec)`,
    );
  }
  lines.push(
    `beside the kubelet peer (worker node ${out.worker.node}: kubelet+containerd+runc+CNI bridge on the same control plane; ratio = aranya node / kubelet node):`,
  );
  lines.push(...peerLines(out.peer));
  lines.push(
    `latency: ${f.warmup} warm-up then ${f.roundTrips} round trips per path in one session, p50/p99 of those; ` +
      `throughput: ${f.runs} download(s) of ${out.blobBytes} bytes per path after one warm-up, median MB/s (10^6 bytes/s); ` +
      `pod start: ${f.podStarts} pods per node one at a time, nearest-rank p50/p99; ` +
      `memory: after ${f.settleSeconds} s of quiet; ` +
      `ratios against direct: exec = kubectl / direct (slowdown), port-forward = kubectl / direct (fraction kept)`,
  );
  return lines;
}

if (import.meta.main) {
  const f = flags();
  const machine = machineInfo();
  const errors: Record<string, string> = {};
  const run = await inBenchWorld(say, (w) => measure(w, f, errors));
  const out = run.out;
  if (run.error) errors.setup = run.error;
  if (out) { for (const l of report(out, f)) console.log(l); }
  console.log(
    `machine: ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, deno ${machine.deno}; ` +
      "kubectl, the API server, etcd, aranya, arhat, Podman, the kubelet and containerd share it",
  );
  const summary = out ? peerSummary(out.peer) : {};
  const missing = requiredKeys(f.podStarts).filter((k) => !(k in summary));
  if (missing.length) {
    errors.summary = `not measured: ${missing.join(", ")}`;
    say(`could not measure ${missing.join(", ")}`);
  }
  console.log(JSON.stringify({
    bench: "stream",
    summary,
    machine,
    runs: f.runs,
    roundTrips: f.roundTrips,
    warmup: f.warmup,
    podStarts: f.podStarts,
    settleSeconds: f.settleSeconds,
    arhatV8Flags: f.arhatV8Flags ?? "shipped",
    figures: "exec: p50/p99 of the round trips; portForward: median MB/s of the runs; " +
      "peer: the aranya node beside the kubelet node (ratios aranya / kubelet)",
    ...(out ?? {}),
    ...(Object.keys(errors).length ? { errors } : {}),
  }));
  if (Object.keys(errors).length) {
    for (const [k, v] of Object.entries(errors)) say(`not measured: ${k}: ${v}`);
  }
  Deno.exit(Object.keys(errors).length ? 1 : 0);
}
