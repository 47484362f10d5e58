/**
 * Collects arhat's `NodeStatusMsg`: system info (`NodeSystemInfo`), capacity,
 * allocatable and the node conditions, from the host it runs on.
 *
 * Sources (see `system_probe.ts` for the permissions each needs): CPUs from
 * `navigator.hardwareConcurrency`; memory from `Deno.systemMemoryInfo()`;
 * storage from the file system holding the state dir; pids from
 * `/proc/sys/kernel/pid_max`, used pids from `/proc/loadavg`; boot id from
 * `/proc/sys/kernel/random/boot_id`; machine id from `/etc/machine-id` (or
 * `/var/lib/dbus/machine-id`); system UUID from `/sys/class/dmi/id/product_uuid`
 * when readable (root only on most machines); OS image from `/etc/os-release`.
 *
 * Allocatable is capacity minus the hard pressure thresholds for memory,
 * storage and pids (as the kubelet subtracts its hard eviction thresholds),
 * with no further reservations. Anything that cannot be measured is reported
 * as empty or 0 and, for conditions, as unknown with the reason; collection
 * itself never fails.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { errorMessage, NotFoundError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import {
  type NodeResourcesSchema,
  type NodeStatusMsg,
  NodeStatusMsgSchema,
  type NodeSystemInfoSchema,
} from "@aranya/proto/gen/aranya/node_pb";
import {
  DEFAULT_THRESHOLDS,
  evaluateNodeConditions,
  type Measured,
  type PressureThresholds,
} from "./conditions.ts";
import {
  armVariantFromCpuinfo,
  goArch,
  osImageFromOsRelease,
  parseLoadavg,
  parseMachineId,
  parsePositiveInt,
  parseUuid,
} from "./host_parsers.ts";
import { createSystemProbe, type SystemProbe } from "./system_probe.ts";

const PID_MAX = "/proc/sys/kernel/pid_max";
const LOADAVG = "/proc/loadavg";

/** The kubelet's default pod capacity. */
export const DEFAULT_MAX_PODS = 110;

/** Options for {@link collectNodeStatus}. */
export interface CollectNodeStatusOptions {
  /** arhat's version, reported as `agent_version`. */
  agentVersion: string;
  /** arhat's state dir: storage capacity and DiskPressure are about its file system. */
  stateDir: string;
  /** The container runtime, when one is configured and reachable. */
  runtime?: { name: string; version: string };
  /** Set when the configured runtime is unreachable: Ready turns unhealthy with this message. */
  runtimeError?: string;
  /** Pressure thresholds; missing fields take {@link DEFAULT_THRESHOLDS}. */
  thresholds?: Partial<PressureThresholds>;
  /** Pod capacity (default {@link DEFAULT_MAX_PODS}). */
  maxPods?: number;
  /** "all" (default) includes system info; "dynamic" only resources and conditions. */
  kind?: "all" | "dynamic";
  /** Host access (default {@link createSystemProbe}()). */
  probe?: SystemProbe;
  /** Where unreadable system facts are reported (warnings, for kind "all" only). */
  log?: Logger;
}

/** A `NodeStatusMsg` in init form, as {@link encodeNodeStatus} takes it. */
export type NodeStatusInit = MessageInitShape<typeof NodeStatusMsgSchema>;

/** Measures the host and returns its node status; never rejects. See the module doc. */
export async function collectNodeStatus(opts: CollectNodeStatusOptions): Promise<NodeStatusMsg> {
  const probe = opts.probe ?? createSystemProbe();
  const log = opts.log ?? nullLogger;
  const thresholds = { ...DEFAULT_THRESHOLDS, ...opts.thresholds };
  const problems: string[] = [];
  const read = async (path: string): Promise<string | undefined> => {
    try {
      return await probe.readFile(path);
    } catch (err) {
      problems.push(errorMessage(err));
      return undefined;
    }
  };

  const [memory, disk, pidMax, tasks, systemInfo] = await Promise.all([
    measure(() => probe.memory()),
    measure(() => probe.diskUsage(opts.stateDir)),
    readPidMax(probe),
    readTaskCount(probe),
    opts.kind === "dynamic" ? Promise.resolve(undefined) : systemInfoOf(opts, read, problems),
  ]);
  const pids: Measured<{ max: number; used: number }> = !pidMax.ok
    ? pidMax
    : !tasks.ok
    ? tasks
    : { ok: true, value: { max: pidMax.value, used: tasks.value } };
  for (const m of [memory, disk, pidMax, tasks]) if (!m.ok) problems.push(m.error);
  if (problems.length > 0 && opts.kind !== "dynamic") {
    log.warn("some node facts could not be read", { problems: [...new Set(problems)] });
  }

  const cpuMillis = BigInt(Math.max(0, Math.trunc(probe.cpuCount()))) * 1000n;
  const maxPods = BigInt(opts.maxPods ?? DEFAULT_MAX_PODS);
  const memoryTotal = memory.ok ? memory.value.total : 0;
  const storageTotal = disk.ok ? disk.value.total : 0;
  const capacity: MessageInitShape<typeof NodeResourcesSchema> = {
    cpuMillis,
    memoryBytes: BigInt(memoryTotal),
    storageBytes: BigInt(storageTotal),
    pods: maxPods,
    pids: BigInt(pidMax.ok ? pidMax.value : 0),
  };
  const allocatable: MessageInitShape<typeof NodeResourcesSchema> = {
    cpuMillis,
    memoryBytes: BigInt(minusPercent(memoryTotal, thresholds.memoryAvailablePercent)),
    storageBytes: BigInt(minusPercent(storageTotal, thresholds.diskAvailablePercent)),
    pods: maxPods,
    pids: BigInt(minusPercent(pidMax.ok ? pidMax.value : 0, thresholds.pidsAvailablePercent)),
  };
  const conditions = evaluateNodeConditions(
    { memory, disk, pids, runtimeError: opts.runtimeError },
    thresholds,
  );
  return create(NodeStatusMsgSchema, { systemInfo, capacity, allocatable, conditions });
}

/** The wire bytes of a node status (the `MSG_NODE_STATUS` payload). */
export function encodeNodeStatus(status: NodeStatusInit): Uint8Array {
  return toBinary(NodeStatusMsgSchema, create(NodeStatusMsgSchema, status));
}

async function systemInfoOf(
  opts: CollectNodeStatusOptions,
  read: (path: string) => Promise<string | undefined>,
  problems: string[],
): Promise<MessageInitShape<typeof NodeSystemInfoSchema>> {
  const arch = goArch(Deno.build.arch);
  const isArm = arch === "arm" || arch === "arm64";
  const [osRelease, cpuinfo, bootId, machineId, dbusMachineId, systemUuid] = await Promise.all([
    read("/etc/os-release").then(async (t) => t ?? await read("/usr/lib/os-release")),
    isArm ? read("/proc/cpuinfo") : Promise.resolve(undefined),
    read("/proc/sys/kernel/random/boot_id"),
    read("/etc/machine-id"),
    read("/var/lib/dbus/machine-id"),
    read("/sys/class/dmi/id/product_uuid"),
  ]);
  const sys = (what: string, fn: () => string): string => {
    try {
      return fn();
    } catch (err) {
      problems.push(`Cannot read the ${what}: ${errorMessage(err)}`);
      return "";
    }
  };
  return {
    os: Deno.build.os,
    osImage: (osRelease && osImageFromOsRelease(osRelease)) ?? "",
    arch,
    archVariant: (cpuinfo && armVariantFromCpuinfo(cpuinfo)) ?? (arch === "arm64" ? "v8" : ""),
    kernelVersion: sys("kernel version", () => Deno.osRelease()),
    bootId: (bootId && parseUuid(bootId)) ?? "",
    machineId: (machineId && parseMachineId(machineId)) ??
      (dbusMachineId && parseMachineId(dbusMachineId)) ?? "",
    systemUuid: (systemUuid && parseUuid(systemUuid)) ?? "",
    runtimeName: opts.runtime?.name ?? "",
    runtimeVersion: opts.runtime?.version ?? "",
    agentVersion: opts.agentVersion,
    hostname: sys("hostname", () => Deno.hostname()),
  };
}

async function measure<T>(fn: () => T | Promise<T>): Promise<Measured<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  }
}

function readPidMax(probe: SystemProbe): Promise<Measured<number>> {
  return measure(async () => {
    const text = await probe.readFile(PID_MAX);
    const max = text === undefined ? undefined : parsePositiveInt(text);
    if (max === undefined) {
      throw new NotFoundError(`"${PID_MAX}" is missing or not a positive number`);
    }
    return max;
  });
}

function readTaskCount(probe: SystemProbe): Promise<Measured<number>> {
  return measure(async () => {
    const text = await probe.readFile(LOADAVG);
    const tasks = text === undefined ? undefined : parseLoadavg(text);
    if (tasks === undefined) {
      throw new NotFoundError(`"${LOADAVG}" is missing or has no task counts`);
    }
    return tasks.total;
  });
}

/** `total` minus `percent`% of it, rounded so the reserve is never understated. */
function minusPercent(total: number, percent: number): number {
  return Math.max(0, total - Math.ceil((total * percent) / 100));
}
