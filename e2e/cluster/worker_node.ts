/**
 * A real worker node on demand: the kubelet built from the pinned module
 * (e2e/cluster/build.ts) with Debian's containerd (its CRI plugin and runc) and
 * a CNI bridge of its own, joined to a running control plane. It is the peer
 * aranya is measured against, and a node pods really run on.
 *
 * Everything belongs to one worker:
 * - `.cache/worker-<id>/` holds containerd's root, state, socket and config, the
 *   kubelet's root, configuration, certificates and pod logs, the CNI config
 *   and IPAM state (never /etc/cni or /var/lib/cni) and the logs;
 * - the pod network is a bridge `arw-<id>` with a /24 of 10.90.0.0/16 (beside
 *   Podman's 10.88.0.0/16 and dockerd's 10.89.0.0/16); its gateway address is
 *   also the Node's InternalIP and the kubelet's listen address (the kubelet
 *   refuses a loopback node IP), so the API server reaches the kubelet on this
 *   machine without depending on how the host's own network looks.
 *
 * containerd and the kubelet run in one PID and mount namespace of their own
 * (util-linux `unshare`; the kubelet joins it with `nsenter`) whose init is
 * containerd. Every shim and container process dies with containerd, and every
 * mount (container root filesystems, shm, network namespace files, the
 * kubelet's volume tmpfs) lives and dies in that namespace; attached (tests),
 * the whole node dies with the harness through PDEATHSIG, even when no
 * `finally` runs. Inside it:
 * - /run, /var/lib and /var/log are overlays whose writes land in the folder:
 *   containerd 1.6 puts shim sockets under /run/containerd whatever its state
 *   dir, the kubelet its device-plugin socket under /var/lib/kubelet and links
 *   under /var/log/containers whatever its root dir;
 * - the six kernel tunables the kubelet rewrites when they differ from what it
 *   wants (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, ...)
 *   read as those values, from files, so the host's stay as they are.
 * Outside it remain only the bridge, the pod's veth pairs (gone with their
 * network namespaces) and the containers' cgroups, which stopping removes.
 *
 * What this machine type needs, found when the node was first brought up here:
 * containerd's `restrict_oom_score_adj` (root lacks CAP_SYS_RESOURCE, and runc
 * fails with "can't get final child's PID from pipe: EOF" without it); the
 * kubelet's `cgroupsPerQOS: false`, `enforceNodeAllocatable: []`,
 * `failSwapOn: false`. The sandbox image is made locally (worker_images.ts).
 *
 * The Node registers with the taint {@link WORKER_TAINT} and the label
 * {@link WORKER_LABEL}, so no other test's pods land on it; callers add
 * {@link WORKER_TOLERATION} and select it with {@link workerSelector}.
 */
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { CACHE, ensureDir, exists, removeAll } from "../paths.ts";
import { refuseInUnitRun } from "../unit_run.ts";
import {
  isAlive,
  run,
  type ServiceProcess,
  sleep,
  startService,
  stopPid,
  tailLog,
  waitReady,
} from "../process.ts";
import { binPath } from "./build.ts";
import { type CertPair, issueLeaf, writeKubeconfig } from "./pki.ts";
import { PAUSE_IMAGE, TEST_IMAGE, writeWorkerImages } from "./worker_images.ts";

/** Label (and taint) key of the worker nodes; its value is {@link WORKER_PEER}. */
export const WORKER_LABEL = "aranya.arhat.dev/peer";
/** Value of {@link WORKER_LABEL}: what the node is a peer of aranya as. */
export const WORKER_PEER = "kubelet";
/** Label holding the worker's id. */
export const WORKER_ID_LABEL = "aranya.arhat.dev/worker";
/** The taint every worker node registers with. */
export const WORKER_TAINT = {
  key: WORKER_LABEL,
  value: WORKER_PEER,
  effect: "NoSchedule",
} as const;
/** The toleration a pod meant for a worker node carries. */
export const WORKER_TOLERATION = {
  key: WORKER_LABEL,
  operator: "Equal",
  value: WORKER_PEER,
  effect: "NoSchedule",
} as const;
/** The id `deno task cluster:up --worker` uses. */
export const DEFAULT_WORKER_ID = "default";
/** Where Debian's containernetworking-plugins are. */
export const CNI_BIN_DIR = "/usr/lib/cni";
/** The /16 the workers' /24 pod subnets come from. */
const POD_NETWORK = "10.90";

/** Options for {@link startWorkerNode}. */
export interface WorkerNodeOptions {
  /** Admin kubeconfig of the running control plane (its server; the Node is deleted with it on stop). */
  kubeconfig: string;
  /** The cluster CA: signs the kubelet's client and serving certificates and is its client CA. */
  ca: CertPair;
  /** 1 to 11 of [a-z0-9]; names the folder, the Node (`worker-<id>`) and the bridge. Default random. */
  id?: string;
  /** Keep running after this process exits (`cluster:up`); default false (dies with us). */
  detached?: boolean;
  /** Extra kubelet flags, appended. */
  kubeletFlags?: string[];
  /**
   * More OCI image archives (oci_archive.ts) to import into containerd before the kubelet starts,
   * with the image names each must yield, e.g. aranya's stand-in image.
   */
  images?: { archive: string; names: string[] }[];
  /** How long the Node may take to be Ready; default 120 s. */
  readyTimeoutMs?: number;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** A running worker node. */
export interface WorkerNode {
  readonly id: string;
  readonly nodeName: string;
  /** The Node's InternalIP: the bridge's gateway address, where the kubelet listens. */
  readonly nodeIp: string;
  readonly kubeletPort: number;
  /** Path of containerd's socket (CRI and containerd API; `ctr --address`). */
  readonly containerdSocket: string;
  /** The pod subnet, e.g. "10.90.0.0/24". */
  readonly podSubnet: string;
  /** Name of the CNI bridge. */
  readonly bridge: string;
  /** The worker's folder under `.cache/`. */
  readonly dir: string;
  /** Host pids of the kubelet and of containerd (the namespace's init). */
  readonly pids: { readonly kubelet: number; readonly containerd: number };
  /** Seconds from the start of {@link startWorkerNode} until the Node was Ready. */
  readonly readySeconds: number;
  /**
   * Stops the kubelet, containerd and with it every shim and container, removes
   * their cgroups, the bridge, the Node and the folder. Idempotent.
   */
  stop(): Promise<void>;
}

/** What a worker's folder records, so a later process can stop it. */
interface WorkerState {
  id: string;
  nodeName: string;
  bridge: string;
  podSubnet?: string;
  nodeIp?: string;
  kubeletPort?: number;
  containerdSocket?: string;
  /** Admin kubeconfig, to delete the Node. */
  kubeconfig?: string;
  detached: boolean;
}

/** Folder of worker `id`. */
export function workerDir(id: string): string {
  return `${CACHE}/worker-${id}`;
}

/** The nodeSelector that places a pod on worker `id`. */
export function workerSelector(id: string): Record<string, string> {
  return { [WORKER_ID_LABEL]: id };
}

/**
 * The CA of a control plane started by e2e/cluster/control_plane.ts, from its
 * admin kubeconfig (`<dir>/admin.kubeconfig` -> `<dir>/run/pki/ca.*`), or
 * undefined when the key is not there (another cluster).
 */
export async function localClusterCa(kubeconfig: string): Promise<CertPair | undefined> {
  const dir = kubeconfig.replace(/\/[^/]*$/, "");
  const ca = { cert: `${dir}/run/pki/ca.crt`, key: `${dir}/run/pki/ca.key` };
  return (await exists(ca.cert)) && (await exists(ca.key)) ? ca : undefined;
}

/** Programs the worker node runs, and the Debian package of each. */
const PROGRAMS: Readonly<Record<string, string>> = {
  "containerd": "containerd",
  "containerd-shim-runc-v2": "containerd",
  "ctr": "containerd",
  "runc": "runc",
  "unshare": "util-linux",
  "nsenter": "util-linux",
  "mount": "mount",
  "ip": "iproute2",
};
const CNI_PLUGINS = ["bridge", "host-local", "loopback"];

async function onPath(name: string): Promise<boolean> {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"]);
  for (const d of dirs) {
    if (d && await isExecutable(`${d}/${name}`)) return true;
  }
  return false;
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    const st = await Deno.stat(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Why a worker node cannot run on this machine, or undefined when it can: it
 * needs Linux, root, the programs of {@link PROGRAMS} and the CNI plugins (the
 * kubelet itself comes from the build, e2e/cluster/build.ts).
 */
export async function workerPrerequisites(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return `a worker node needs Linux, this is ${Deno.build.os}`;
  if (Deno.uid() !== 0) {
    return "a worker node needs root (containerd mounts, namespaces and the pod bridge)";
  }
  const missing = new Map<string, string>();
  for (const [name, pkg] of Object.entries(PROGRAMS)) {
    if (!await onPath(name)) missing.set(`"${name}"`, pkg);
  }
  for (const p of CNI_PLUGINS) {
    if (!await isExecutable(`${CNI_BIN_DIR}/${p}`)) {
      missing.set(`"${CNI_BIN_DIR}/${p}"`, "containernetworking-plugins");
    }
  }
  if (missing.size > 0) {
    const pkgs = [...new Set(missing.values())].map((p) => `"${p}"`).join(", ");
    return `missing ${[...missing.keys()].join(", ")} (Debian ${pkgs}); run "deno task setup"`;
  }
  return undefined;
}

/**
 * Why a test or bench cannot start a worker node here (what {@link workerPrerequisites} finds
 * missing, or an external cluster, ARANYA_TEST_KUBECONFIG, without its CA key beside the
 * kubeconfig), or undefined when it can.
 */
export async function workerSkipReason(): Promise<string | undefined> {
  const missing = await workerPrerequisites();
  if (missing) return missing;
  const external = Deno.env.get("ARANYA_TEST_KUBECONFIG");
  if (external && !(await localClusterCa(external))) {
    return `the cluster of ARANYA_TEST_KUBECONFIG="${external}" has no CA key beside it ` +
      "(run/pki/ca.key), and the kubelet's certificates must be signed by the cluster CA";
  }
  return undefined;
}

/**
 * The kubelet's kernel tunables (upstream's setupKernelTunables) and the values
 * it wants; inside the worker's namespace they read as these.
 */
const KUBELET_SYSCTLS: Readonly<Record<string, string>> = {
  "vm.overcommit_memory": "1",
  "vm.panic_on_oom": "0",
  "kernel.panic": "10",
  "kernel.panic_on_oops": "1",
  "kernel.keys.root_maxkeys": "1000000",
  "kernel.keys.root_maxbytes": "25000000",
};

/**
 * The init of the worker's namespace ($0 is the worker folder): the overlays,
 * the tunables, then containerd as PID 1.
 */
const NAMESPACE_INIT = `set -e
d="$0"
for p in run var/lib var/log; do
  o="$d/ns/$(echo "$p" | tr / -)"
  mkdir -p "$o/upper" "$o/work"
  mount -t overlay aranya-worker -o "lowerdir=/$p,upperdir=$o/upper,workdir=$o/work" "/$p"
done
for f in "$d"/sysctl/*; do
  mount --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
done
exec containerd --config "$d/containerd.toml"
`;

/** Serialises starts (subnet choice, leftovers) across processes; the kernel drops it with us. */
async function lockWorkers(log: (line: string) => void): Promise<Deno.FsFile> {
  await ensureDir(CACHE);
  const file = await Deno.open(`${CACHE}/worker.lock`, { create: true, write: true });
  try {
    const waiting = setTimeout(
      () => log("waiting for another process starting a worker node (.cache/worker.lock)"),
      1000,
    );
    await file.lock(true).finally(() => clearTimeout(waiting));
  } catch (err) {
    file.close();
    throw err;
  }
  return file;
}

/** Starts a worker node and resolves when its Node is Ready. On failure nothing is left behind. */
export async function startWorkerNode(opts: WorkerNodeOptions): Promise<WorkerNode> {
  refuseInUnitRun("a worker node (kubelet and containerd)");
  const t0 = performance.now();
  const id = opts.id ?? crypto.randomUUID().replaceAll("-", "").slice(0, 8);
  if (!/^[a-z0-9]{1,11}$/.test(id)) {
    throw new Error(`Worker id "${id}" must be 1 to 11 lowercase letters or digits`);
  }
  const log = opts.log ?? (() => {});
  const detached = opts.detached ?? false;
  const missing = await workerPrerequisites();
  if (missing) throw new Error(`Cannot start worker node "${id}": ${missing}`);
  if (!await isExecutable(binPath("kubelet"))) {
    throw new Error(
      `Cannot start worker node "${id}": the kubelet "${binPath("kubelet")}" is not built; ` +
        'run "deno task setup"',
    );
  }

  const dir = workerDir(id);
  const state: WorkerState = {
    id,
    nodeName: `worker-${id}`,
    bridge: `arw-${id}`,
    kubeconfig: opts.kubeconfig,
    detached,
  };
  // The owner of a folder holds a lock on "<folder>.owner" while it lives (flock: released by
  // the kernel when it dies), taken before the folder exists; a detached worker drops it once up.
  let ownerLock: Deno.FsFile | undefined;
  const lock = await lockWorkers(log);
  try {
    await teardown(id, () => {});
    await sweepDeadWorkers();
    ownerLock = await Deno.open(`${dir}.owner`, { create: true, write: true });
    await ownerLock.lock(true);
    await ensureDir(dir);
    const octet = await freeSubnetOctet();
    state.podSubnet = `${POD_NETWORK}.${octet}.0/24`;
    state.nodeIp = `${POD_NETWORK}.${octet}.1`;
    await writeState(dir, state);
    await createBridge(state.bridge, `${state.nodeIp}/24`);
  } catch (err) {
    await teardown(id, () => {}).catch(() => {});
    ownerLock?.close();
    await Deno.remove(`${dir}.owner`).catch(() => {});
    throw err;
  } finally {
    lock.close();
  }
  const owner = ownerLock!;
  let ownerHeld = true;
  const releaseOwner = async () => {
    if (!ownerHeld) return;
    ownerHeld = false;
    owner.close();
    await Deno.remove(`${dir}.owner`).catch(() => {});
  };

  const nodeName = state.nodeName;
  const nodeIp = state.nodeIp!;
  const socket = `${dir}/containerd.sock`;
  const started: ServiceProcess[] = [];
  try {
    const kubeletPort = portOn(nodeIp);
    const healthzPort = portOn("127.0.0.1");
    state.kubeletPort = kubeletPort;
    state.containerdSocket = socket;
    await writeState(dir, state);

    log(`worker ${id}: certificates and configuration in ${dir}`);
    const pki = await ensureDir(`${dir}/pki`);
    const subject = `/O=system:nodes/CN=system:node:${nodeName}`;
    const client = await issueLeaf(pki, opts.ca, {
      name: "kubelet-client",
      subject,
      usage: "client",
    });
    const serving = await issueLeaf(pki, opts.ca, {
      name: "kubelet-serving",
      subject,
      usage: "server",
      sans: [`IP:${nodeIp}`, "IP:127.0.0.1", `DNS:${nodeName}`],
    });
    await writeKubeconfig({
      path: `${dir}/kubelet.kubeconfig`,
      server: await kubeconfigServer(opts.kubeconfig),
      ca: opts.ca.cert,
      client,
      user: `system:node:${nodeName}`,
    });
    await writeCniConfig(dir, state);
    await writeContainerdConfig(dir, socket);
    await ensureDir(`${dir}/sysctl`);
    for (const [name, value] of Object.entries(KUBELET_SYSCTLS)) {
      await Deno.writeTextFile(`${dir}/sysctl/${name}`, `${value}\n`);
    }

    log(`worker ${id}: starting containerd in the worker's own PID and mount namespace`);
    const ctrd = await startService({
      name: "containerd",
      cmd: "unshare",
      args: [
        "--pid",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        NAMESPACE_INIT,
        dir,
      ],
      logFile: `${dir}/containerd.log`,
      pidFile: `${dir}/containerd-ns.pid`,
      detached,
    });
    started.push(ctrd);
    await waitReady(ctrd, async () => {
      await ctr(socket, ["version"]);
      return true;
    }, 30_000);
    const containerdPid = await childPid(ctrd, "containerd");

    log(`worker ${id}: importing ${TEST_IMAGE} and ${PAUSE_IMAGE} into containerd (k8s.io)`);
    const archive = await writeWorkerImages(await ensureDir(`${dir}/images`));
    await ctr(socket, ["images", "import", "--snapshotter", SNAPSHOTTER, archive]);
    await removeAll(`${dir}/images`);
    for (const more of opts.images ?? []) {
      log(`worker ${id}: importing ${more.names.join(", ")} into containerd (k8s.io)`);
      await ctr(socket, ["images", "import", "--snapshotter", SNAPSHOTTER, more.archive]);
    }
    const images = (await ctr(socket, ["images", "list", "--quiet"])).split("\n");
    for (const want of [TEST_IMAGE, PAUSE_IMAGE, ...(opts.images ?? []).flatMap((i) => i.names)]) {
      if (!images.includes(want)) {
        throw new Error(
          `containerd of worker "${id}" lacks image "${want}" after the import (has: ${
            images.filter(Boolean).join(", ")
          })`,
        );
      }
    }

    await writeKubeletConfig(dir, {
      nodeIp,
      kubeletPort,
      healthzPort,
      socket,
      serving,
      ca: opts.ca,
    });
    log(`worker ${id}: starting the kubelet as Node "${nodeName}" on ${nodeIp}:${kubeletPort}`);
    const kubelet = await startService({
      name: "kubelet",
      cmd: "nsenter",
      args: [
        "--target",
        String(containerdPid),
        "--pid",
        "--mount",
        "--",
        binPath("kubelet"),
        `--config=${dir}/kubelet.yaml`,
        `--kubeconfig=${dir}/kubelet.kubeconfig`,
        `--root-dir=${dir}/kubelet`,
        `--hostname-override=${nodeName}`,
        `--node-ip=${nodeIp}`,
        `--node-labels=${WORKER_LABEL}=${WORKER_PEER},${WORKER_ID_LABEL}=${id}`,
        "--v=1",
        ...(opts.kubeletFlags ?? []),
      ],
      logFile: `${dir}/kubelet.log`,
      pidFile: `${dir}/kubelet-ns.pid`,
      detached,
    });
    started.push(kubelet);
    const kubeletPid = await childPid(kubelet, binPath("kubelet"));
    await waitReady(kubelet, async () => {
      const res = await fetch(`http://127.0.0.1:${healthzPort}/healthz`, {
        signal: AbortSignal.timeout(2000),
      });
      return res.ok && (await res.text()) === "ok";
    }, 60_000);
    await waitReady(
      kubelet,
      () => nodeReady(opts.kubeconfig, nodeName),
      opts.readyTimeoutMs ?? 120_000,
    )
      .catch(async (err) => {
        throw new Error(
          `Node "${nodeName}" of worker "${id}" did not turn Ready and schedulable: ${
            err instanceof Error ? err.message : String(err)
          }\nend of ${dir}/containerd.log:\n${await tailLog(`${dir}/containerd.log`, 15)}`,
        );
      });
    const readySeconds = (performance.now() - t0) / 1000;
    log(`worker ${id}: Node "${nodeName}" is Ready after ${readySeconds.toFixed(1)} s`);

    if (detached) await releaseOwner();
    let stopped = false;
    return {
      id,
      nodeName,
      nodeIp,
      kubeletPort,
      containerdSocket: socket,
      podSubnet: state.podSubnet!,
      bridge: state.bridge,
      dir,
      pids: { kubelet: kubeletPid, containerd: containerdPid },
      readySeconds,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await teardown(id, log, started);
        await releaseOwner();
      },
    };
  } catch (err) {
    await teardown(id, () => {}, started).catch(() => {});
    await releaseOwner();
    throw err;
  }
}

/** Stops worker `id` (detached, or left over by a process that died) and removes what it left. */
export async function stopWorkerNode(
  id: string,
  log: (line: string) => void = () => {},
): Promise<void> {
  const lock = await lockWorkers(log);
  try {
    await teardown(id, log);
  } finally {
    lock.close();
  }
}

/**
 * Removes what attached workers of processes that died left behind (their
 * processes died with them: the bridge, cgroups, Node and folder remain).
 * Every start does this first; so does the test harness.
 */
export async function stopDeadWorkers(): Promise<void> {
  const lock = await lockWorkers(() => {});
  try {
    await sweepDeadWorkers();
  } finally {
    lock.close();
  }
}

/** Stops every worker whose owner process is gone (attached ones of runs that died). */
async function sweepDeadWorkers(): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(CACHE));
  } catch {
    return;
  }
  for (const e of entries) {
    const id = /^worker-([a-z0-9]{1,11})\.owner$/.exec(e.name)?.[1];
    if (!id || !e.isFile) continue;
    const owner = await Deno.open(`${CACHE}/${e.name}`, { write: true }).catch(() => undefined);
    if (!owner) continue;
    try {
      if (await owner.tryLock(true).catch(() => false)) {
        await teardown(id, () => {});
        await Deno.remove(`${CACHE}/${e.name}`).catch(() => {});
      }
    } finally {
      owner.close();
    }
  }
}

/**
 * Stops everything of worker `id`: the kubelet, containerd (the namespace's
 * init: the kernel kills every shim and container with it and drops the
 * namespace's mounts), any other process naming its folder, its containers'
 * cgroups, host mounts under its folder (none are expected), the bridge, the
 * Node (best effort, through the admin kubeconfig) and the folder.
 */
async function teardown(
  id: string,
  log: (line: string) => void,
  services: ServiceProcess[] = [],
): Promise<void> {
  const dir = workerDir(id);
  const state: WorkerState = await Deno.readTextFile(`${dir}/state.json`)
    .then((t) => JSON.parse(t) as WorkerState)
    .catch(() => ({ id, nodeName: `worker-${id}`, bridge: `arw-${id}`, detached: false }));
  const mine = () => workerProcesses(id);
  const kubelets = (await mine()).filter((p) => p.args.startsWith(binPath("kubelet")));
  if (kubelets.length || (await mine()).length) log(`worker ${id}: stopping`);
  await Promise.all(kubelets.map((p) => stopPid(p.pid, 15_000)));
  const containerds = (await mine()).filter((p) => /^containerd --config /.test(p.args));
  await Promise.all(containerds.map((p) => stopPid(p.pid, 10_000)));
  for (let i = 0; i < 50; i++) {
    const left = await mine();
    if (left.length === 0) break;
    for (const p of left) await stopPid(p.pid, i < 20 ? 2_000 : 0);
  }
  for (const svc of services.reverse()) await svc.stop(1_000).catch(() => {});

  await removeContainerCgroups(dir);
  await unmountUnder(dir);
  if (await linkExists(state.bridge)) await run("ip", ["link", "delete", state.bridge]);
  if (state.kubeconfig && await exists(state.kubeconfig)) {
    await run(binPath("kubectl"), [
      `--kubeconfig=${state.kubeconfig}`,
      "delete",
      "node",
      state.nodeName,
      "--ignore-not-found",
      "--wait=false",
      "--request-timeout=10s",
    ]).catch(() => {});
  }
  await removeAll(dir);
}

/** One line of `ps`. */
export interface Proc {
  pid: number;
  ppid: number;
  args: string;
}

/** Every process on the machine (procps: Deno wants --allow-all for /proc/<pid>). */
export async function processes(): Promise<Proc[]> {
  const out = await run("ps", ["-ww", "-eo", "pid=,ppid=,args="]);
  return out.split("\n").flatMap((line) => {
    const m = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line);
    return m ? [{ pid: Number(m[1]), ppid: Number(m[2]), args: m[3]! }] : [];
  });
}

/**
 * The processes of worker `id`: every one whose command line names its folder
 * (the namespace's wrapper and init containerd, the kubelet and nsenter, the
 * shims, a `ctr` talking to it). Container processes are not among them; they
 * live in the worker's PID namespace and die with its containerd.
 */
export async function workerProcesses(id: string): Promise<Proc[]> {
  const dir = workerDir(id).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const names = new RegExp(`(^|[\\s=])${dir}(/|\\s|$)`);
  return (await processes()).filter((p) => names.test(p.args));
}

/**
 * The host pid of the process `svc` (unshare or nsenter) forked to run
 * `program`, once it runs it.
 */
async function childPid(svc: ServiceProcess, program: string): Promise<number> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const child = (await processes()).find((p) =>
      p.ppid === svc.pid && (p.args === program || p.args.startsWith(`${program} `))
    );
    if (child) return child.pid;
    if (!isAlive(svc.pid)) {
      throw new Error(
        `Service "${svc.name}" exited before it was ready (it did not run "${program}"); ` +
          `end of ${svc.logFile}:\n${await tailLog(svc.logFile)}`,
      );
    }
    await sleep(50);
  }
  throw new Error(
    `Service "${svc.name}" did not run "${program}" within 15 s; end of ${svc.logFile}:\n${await tailLog(
      svc.logFile,
    )}`,
  );
}

/** Removes the cgroups of the containers whose bundles are in the folder (empty once they died). */
async function removeContainerCgroups(dir: string): Promise<void> {
  const bundles = `${dir}/containerd/state/io.containerd.runtime.v2.task/k8s.io`;
  const paths: string[] = [];
  try {
    for await (const e of Deno.readDir(bundles)) {
      const spec = await Deno.readTextFile(`${bundles}/${e.name}/config.json`).catch(() => "");
      const p = spec ? (JSON.parse(spec) as { linux?: { cgroupsPath?: string } }).linux : undefined;
      const rel = p?.cgroupsPath?.replace(/^\/+/, "");
      if (rel && !rel.includes("..") && !rel.includes(":")) paths.push(rel);
    }
  } catch {
    return;
  }
  if (paths.length === 0) return;
  // Deno.remove would need write access to /sys/fs/cgroup; rmdir only removes empty cgroups,
  // so their parent ("k8s.io", shared by every worker) goes only when no other worker uses it.
  const script = 'for p in "$@" ; do for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do ' +
    '[ -d "$h$p" ] && rmdir "$h$p" 2>/dev/null; q="${p%/*}"; ' +
    '[ "$q" != "$p" ] && [ -d "$h$q" ] && rmdir "$h$q" 2>/dev/null; done; done; true';
  for (let i = 0; i < 10; i++) {
    await run("sh", ["-c", script, "sh", ...paths]);
    const left = await run("sh", [
      "-c",
      'for p in "$@"; do for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do [ -d "$h$p" ] && echo "$h$p"; done; done; true',
      "sh",
      ...paths,
    ]);
    if (!left.trim()) return;
    await sleep(200);
  }
}

/** Mount points at or under `dir` in this mount namespace, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  // Deno wants --allow-all for /proc/self; cat reads the same mount namespace's table.
  const table = await run("cat", ["/proc/self/mountinfo"]);
  return table.split("\n")
    .map((l) => l.split(" ")[4]?.replace(/\\040/g, " "))
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
}

async function unmountUnder(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) {
    await run("umount", [m]).catch(() => run("umount", ["-l", m]).catch(() => {}));
  }
}

async function linkExists(name: string): Promise<boolean> {
  const out = await new Deno.Command("ip", {
    args: ["link", "show", "dev", name],
    stdout: "null",
    stderr: "null",
  }).output();
  return out.success;
}

async function createBridge(name: string, cidr: string): Promise<void> {
  if (await linkExists(name)) await run("ip", ["link", "delete", name]);
  await run("ip", ["link", "add", "name", name, "type", "bridge"]);
  await run("ip", ["addr", "add", cidr, "dev", name]);
  await run("ip", ["link", "set", name, "up"]);
}

/** A third octet of 10.90.X.0/24 that no interface and no other worker uses. */
async function freeSubnetOctet(): Promise<number> {
  const used = new Set<number>();
  for (const i of Deno.networkInterfaces()) {
    const m = new RegExp(`^${POD_NETWORK.replace(".", "\\.")}\\.(\\d+)\\.`).exec(i.address);
    if (m) used.add(Number(m[1]));
  }
  for await (const e of Deno.readDir(CACHE)) {
    if (!e.isDirectory || !e.name.startsWith("worker-")) continue;
    const s = await Deno.readTextFile(`${CACHE}/${e.name}/state.json`)
      .then((t) => JSON.parse(t) as WorkerState).catch(() => undefined);
    const m = s?.podSubnet ? /^\d+\.\d+\.(\d+)\./.exec(s.podSubnet) : null;
    if (m) used.add(Number(m[1]));
  }
  for (let x = 0; x < 256; x++) if (!used.has(x)) return x;
  throw new Error(`No free /24 left in ${POD_NETWORK}.0.0/16 for a worker node's pods`);
}

/** A TCP port free on `host` a moment ago. */
function portOn(host: string): number {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function writeState(dir: string, state: WorkerState): Promise<void> {
  await Deno.writeTextFile(`${dir}/state.json`, JSON.stringify(state, null, 2) + "\n");
}

/** The API server URL of a kubeconfig's current context. */
async function kubeconfigServer(kubeconfig: string): Promise<string> {
  type Kc = {
    "current-context"?: string;
    contexts?: { name: string; context: { cluster: string } }[];
    clusters?: { name: string; cluster: { server: string } }[];
  };
  const kc = parseYaml(await Deno.readTextFile(kubeconfig)) as Kc;
  const ctx = kc.contexts?.find((c) => c.name === kc["current-context"]);
  const server = kc.clusters?.find((c) => c.name === ctx?.context.cluster)?.cluster.server;
  if (!server) throw new Error(`No server for the current context in "${kubeconfig}"`);
  return server;
}

async function ctr(socket: string, args: string[]): Promise<string> {
  return await run("ctr", ["--address", socket, "--namespace", "k8s.io", ...args]);
}

/**
 * Ready, and schedulable: the node lifecycle controller has taken its
 * `node.kubernetes.io/not-ready` taint off again (a moment after Ready).
 */
async function nodeReady(kubeconfig: string, nodeName: string): Promise<boolean> {
  type Node = {
    spec: { taints?: { key: string }[] };
    status: { conditions?: { type: string; status: string }[] };
  };
  const node = JSON.parse(
    await run(binPath("kubectl"), [
      `--kubeconfig=${kubeconfig}`,
      "get",
      "node",
      nodeName,
      "-o",
      "json",
    ]),
  ) as Node;
  const ready = node.status.conditions?.find((c) => c.type === "Ready")?.status === "True";
  return ready && !node.spec.taints?.some((t) => t.key.startsWith("node.kubernetes.io/"));
}

/** containerd's snapshotter: overlayfs, as a default install uses. */
const SNAPSHOTTER = "overlayfs";

/** containerd 1.6 configuration: everything under the folder, CRI with our CNI and pause image. */
async function writeContainerdConfig(dir: string, socket: string): Promise<void> {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  await Deno.writeTextFile(
    `${dir}/containerd.toml`,
    `version = 2
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
# 0: leave containerd's own OOM score alone (lowering it needs CAP_SYS_RESOURCE).
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "${socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"

[${cri}]
  sandbox_image = "${PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true

[${cri}.containerd]
  snapshotter = "${SNAPSHOTTER}"
  default_runtime_name = "runc"

[${cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[${cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "${dir}/containerd/runc"

[${cri}.cni]
  bin_dir = "${CNI_BIN_DIR}"
  conf_dir = "${dir}/cni/net.d"
  max_conf_num = 1
`,
  );
}

/** The pod network: Debian's bridge and host-local plugins, state in the folder. */
async function writeCniConfig(dir: string, state: WorkerState): Promise<void> {
  const confDir = await ensureDir(`${dir}/cni/net.d`);
  await Deno.writeTextFile(
    `${confDir}/10-worker.conflist`,
    JSON.stringify(
      {
        cniVersion: "1.0.0",
        name: `aranya-worker-${state.id}`,
        plugins: [{
          type: "bridge",
          bridge: state.bridge,
          isGateway: true,
          // No masquerading (no iptables rules to leave behind): pods talk to this machine.
          ipMasq: false,
          ipam: {
            type: "host-local",
            ranges: [[{ subnet: state.podSubnet, gateway: state.nodeIp }]],
            routes: [{ dst: "0.0.0.0/0" }],
            dataDir: `${dir}/cni/ipam`,
          },
        }],
      },
      null,
      2,
    ) + "\n",
  );
}

/** The KubeletConfiguration (kubelet.config.k8s.io/v1beta1). */
async function writeKubeletConfig(
  dir: string,
  o: {
    nodeIp: string;
    kubeletPort: number;
    healthzPort: number;
    socket: string;
    serving: CertPair;
    ca: CertPair;
  },
): Promise<void> {
  const config = {
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    address: o.nodeIp,
    port: o.kubeletPort,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    healthzPort: o.healthzPort,
    tlsCertFile: o.serving.cert,
    tlsPrivateKeyFile: o.serving.key,
    rotateCertificates: false,
    serverTLSBootstrap: false,
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true, cacheTTL: "2m0s" },
      x509: { clientCAFile: o.ca.cert },
    },
    authorization: {
      mode: "Webhook",
      webhook: { cacheAuthorizedTTL: "5m0s", cacheUnauthorizedTTL: "30s" },
    },
    containerRuntimeEndpoint: `unix://${o.socket}`,
    cgroupDriver: "cgroupfs",
    // This machine: no QoS cgroup tree, no node allocatable enforcement, swap tolerated,
    // cgroup v1 (hybrid) accepted, no OOM score of its own (no CAP_SYS_RESOURCE).
    cgroupsPerQOS: false,
    enforceNodeAllocatable: [],
    failSwapOn: false,
    failCgroupV1: false,
    oomScoreAdj: 0,
    // No iptables chains (KUBE-FIREWALL, the hint chain) to leave on the host.
    makeIPTablesUtilChains: false,
    podLogsDir: `${dir}/pod-logs`,
    volumePluginDir: `${dir}/volume-plugins`,
    registerNode: true,
    registerWithTaints: [WORKER_TAINT],
    // A busy test disk must not evict pods or block them: only a memory threshold is kept
    // ("0%" turns a signal off).
    evictionHard: {
      "memory.available": "100Mi",
      "nodefs.available": "0%",
      "nodefs.inodesFree": "0%",
      "imagefs.available": "0%",
      "imagefs.inodesFree": "0%",
    },
    // 100 turns image garbage collection off: the imported images cannot be pulled again.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    imageMaximumGCAge: "0s",
    serializeImagePulls: false,
    shutdownGracePeriod: "0s",
    logging: { format: "text" },
  };
  await Deno.writeTextFile(`${dir}/kubelet.yaml`, stringifyYaml(config));
}
