/**
 * A device's StatsMsg as the kubelet's Summary API (`GET /stats/summary`,
 * `k8s.io/kubelet/pkg/apis/stats/v1alpha1`), the JSON metrics-server and
 * `kubectl get --raw /api/v1/nodes/<node>/proxy/stats/summary` read.
 *
 * What the device measures is mapped field by field; what it does not
 * measure (network, volumes, ephemeral storage, image fs, rlimit, system
 * containers) is left out, as the kubelet leaves out what it cannot read.
 * Pod CPU and memory are the sums of the pod's running containers (the
 * kubelet reads the pod cgroup, which is the same plus the sandbox).
 *
 * Times are RFC 3339 in UTC with whole seconds, as `metav1.Time` marshals
 * them; counters are JSON numbers (exact up to 2^53, which a cumulative CPU
 * time passes only after about 104 core-days; Go parses them back into
 * uint64 either way).
 */
import type {
  ContainerStats,
  CpuStats,
  MemoryStats,
  PodStats,
  StatsMsg,
} from "@aranya/proto/gen/aranya/stats_pb";

/** `CPUStats`. */
export interface SummaryCpuStats {
  time: string;
  /** Average use since the device's previous reading, billionths of a core. */
  usageNanoCores?: number;
  /** Cumulative CPU time, core-nanoseconds. */
  usageCoreNanoSeconds?: number;
}

/** `MemoryStats`. */
export interface SummaryMemoryStats {
  time: string;
  /** Node only. */
  availableBytes?: number;
  usageBytes?: number;
  workingSetBytes?: number;
  rssBytes?: number;
}

/** `FsStats`. */
export interface SummaryFsStats {
  time: string;
  availableBytes?: number;
  capacityBytes?: number;
  usedBytes?: number;
}

/** `NodeStats`. */
export interface SummaryNodeStats {
  nodeName: string;
  /** Boot time; omitted when unknown. */
  startTime?: string;
  cpu?: SummaryCpuStats;
  memory?: SummaryMemoryStats;
  fs?: SummaryFsStats;
}

/** `ContainerStats`. */
export interface SummaryContainerStats {
  name: string;
  /** Omitted when unknown (the kubelet would write null). */
  startTime?: string;
  cpu?: SummaryCpuStats;
  memory?: SummaryMemoryStats;
}

/** `PodReference`. */
export interface SummaryPodReference {
  name: string;
  namespace: string;
  uid: string;
}

/** `PodStats`. */
export interface SummaryPodStats {
  podRef: SummaryPodReference;
  /** Omitted when unknown (the kubelet would write null). */
  startTime?: string;
  containers: SummaryContainerStats[];
  cpu?: SummaryCpuStats;
  memory?: SummaryMemoryStats;
}

/** `Summary`: the body of `GET /stats/summary`. */
export interface Summary {
  node: SummaryNodeStats;
  pods: SummaryPodStats[];
}

/** A pod's usage: the sums over its containers, with the newest reading time. */
export interface PodUsage {
  /** undefined when no container has CPU figures. */
  cpu?: {
    timeMs: number;
    usageCoreNanoseconds: number;
    /** undefined unless every container has a rate. */
    usageNanoCores?: number;
  };
  memory?: {
    timeMs: number;
    usageBytes: number;
    workingSetBytes: number;
    /** undefined unless every container reports rss. */
    rssBytes?: number;
  };
}

/** Sums the usage of a pod's containers (shared with `resource_metrics.ts`). */
export function podUsage(pod: PodStats): PodUsage {
  const out: PodUsage = {};
  const cpus = pod.containers.map((c) => c.cpu).filter((c) => c !== undefined);
  if (cpus.length > 0) {
    out.cpu = {
      timeMs: Math.max(...cpus.map((c) => Number(c.timeUnixMs))),
      usageCoreNanoseconds: sum(cpus.map((c) => c.usageCoreNanoseconds)),
      usageNanoCores: cpus.length === pod.containers.length &&
          cpus.every((c) => c.usageNanoCores !== undefined)
        ? sum(cpus.map((c) => c.usageNanoCores!))
        : undefined,
    };
  }
  const mems = pod.containers.map((c) => c.memory).filter((m) => m !== undefined);
  if (mems.length > 0) {
    out.memory = {
      timeMs: Math.max(...mems.map((m) => Number(m.timeUnixMs))),
      usageBytes: sum(mems.map((m) => m.usageBytes)),
      workingSetBytes: sum(mems.map((m) => m.workingSetBytes)),
      rssBytes: mems.length === pod.containers.length && mems.every((m) => m.rssBytes !== undefined)
        ? sum(mems.map((m) => m.rssBytes!))
        : undefined,
    };
  }
  return out;
}

/**
 * The Summary API body for node `nodeName` from the device's `msg`. Pure;
 * pods keep the device's order, containers too.
 */
export function toSummary(nodeName: string, msg: StatsMsg): Summary {
  const n = msg.node;
  const node: SummaryNodeStats = { nodeName };
  const start = n && rfc3339(n.startTimeUnixMs);
  if (start) node.startTime = start;
  if (n?.cpu) node.cpu = cpuStats(n.cpu);
  if (n?.memory) node.memory = memoryStats(n.memory);
  if (n?.fs) {
    node.fs = {
      time: timeOf(n.fs.timeUnixMs),
      availableBytes: Number(n.fs.availableBytes),
      capacityBytes: Number(n.fs.capacityBytes),
      usedBytes: Number(n.fs.usedBytes),
    };
  }
  return { node, pods: msg.pods.map(podStats) };
}

function podStats(p: PodStats): SummaryPodStats {
  const out: SummaryPodStats = {
    podRef: { name: p.name, namespace: p.namespace, uid: p.podUid },
    containers: p.containers.map(containerStats),
  };
  const start = rfc3339(p.startTimeUnixMs);
  if (start) out.startTime = start;
  const usage = podUsage(p);
  if (usage.cpu) {
    out.cpu = omitUndefined({
      time: timeOf(usage.cpu.timeMs),
      usageNanoCores: usage.cpu.usageNanoCores,
      usageCoreNanoSeconds: usage.cpu.usageCoreNanoseconds,
    });
  }
  if (usage.memory) {
    out.memory = omitUndefined({
      time: timeOf(usage.memory.timeMs),
      usageBytes: usage.memory.usageBytes,
      workingSetBytes: usage.memory.workingSetBytes,
      rssBytes: usage.memory.rssBytes,
    });
  }
  return out;
}

function containerStats(c: ContainerStats): SummaryContainerStats {
  const out: SummaryContainerStats = { name: c.name };
  const start = rfc3339(c.startTimeUnixMs);
  if (start) out.startTime = start;
  if (c.cpu) out.cpu = cpuStats(c.cpu);
  if (c.memory) out.memory = memoryStats(c.memory);
  return out;
}

function cpuStats(c: CpuStats): SummaryCpuStats {
  return omitUndefined({
    time: timeOf(c.timeUnixMs),
    usageNanoCores: optionalNumber(c.usageNanoCores),
    usageCoreNanoSeconds: Number(c.usageCoreNanoseconds),
  });
}

function memoryStats(m: MemoryStats): SummaryMemoryStats {
  return omitUndefined({
    time: timeOf(m.timeUnixMs),
    availableBytes: optionalNumber(m.availableBytes),
    usageBytes: Number(m.usageBytes),
    workingSetBytes: Number(m.workingSetBytes),
    rssBytes: optionalNumber(m.rssBytes),
  });
}

/** Unix ms as `metav1.Time` marshals it (UTC, whole seconds); undefined for 0 (unknown). */
export function rfc3339(unixMs: bigint | number): string | undefined {
  const ms = Number(unixMs);
  if (!(ms > 0)) return undefined;
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/**
 * A reading's time; the epoch when the device gave none (arhat always does),
 * because `metav1.Time` cannot parse an empty string.
 */
function timeOf(unixMs: bigint | number): string {
  return rfc3339(unixMs) ?? "1970-01-01T00:00:00Z";
}

function optionalNumber(v: bigint | undefined): number | undefined {
  return v === undefined ? undefined : Number(v);
}

function sum(values: (bigint | number)[]): number {
  return values.reduce<number>((a, v) => a + Number(v), 0);
}

/** `o` without its undefined fields (so they are absent, not null, in JSON and in deepEqual). */
function omitUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
