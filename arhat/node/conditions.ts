/**
 * Node conditions from measurements and thresholds, as the kubelet computes
 * them: `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure`. Pure.
 *
 * Status mapping (node.proto): `STATUS_HEALTHY` is the good state of each
 * condition (Ready=True, or no pressure: XPressure=False), `STATUS_UNHEALTHY`
 * the bad one, and `STATUS_UNSPECIFIED` means arhat could not measure it
 * (Kubernetes "Unknown"); the message then says why.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { NodeCondition_Status, type NodeConditionSchema } from "@aranya/proto/gen/aranya/node_pb";

/** A condition ready to be put into a `NodeStatusMsg`. */
export type NodeConditionInit = MessageInitShape<typeof NodeConditionSchema> & {
  type: string;
  status: NodeCondition_Status;
  reason: string;
  message: string;
};

/** Pressure thresholds: a resource is under pressure when less than this share is available. */
export interface PressureThresholds {
  /** Percent of memory that must stay available (default 5). */
  memoryAvailablePercent: number;
  /** Percent of the state dir's file system that must stay available (default 10). */
  diskAvailablePercent: number;
  /** Percent of `pid_max` that must stay free (default 5). */
  pidsAvailablePercent: number;
}

/** The defaults of {@link PressureThresholds}. */
export const DEFAULT_THRESHOLDS: Readonly<PressureThresholds> = Object.freeze({
  memoryAvailablePercent: 5,
  diskAvailablePercent: 10,
  pidsAvailablePercent: 5,
});

/** A measurement, or why there is none. */
export type Measured<T> = { ok: true; value: T } | { ok: false; error: string };

/** What the conditions are computed from. */
export interface NodeMeasurements {
  memory: Measured<{ total: number; available: number }>;
  disk: Measured<{ total: number; available: number }>;
  /** `max` from pid_max, `used` from /proc/loadavg's total tasks. */
  pids: Measured<{ max: number; used: number }>;
  /** Set when the container runtime is configured but unreachable. */
  runtimeError?: string;
}

/**
 * The four conditions, in the order Ready, MemoryPressure, DiskPressure, PIDPressure.
 * A resource is under pressure when `available / total * 100 < threshold`; a threshold of 0
 * therefore never reports pressure.
 */
export function evaluateNodeConditions(
  m: NodeMeasurements,
  thresholds: PressureThresholds = DEFAULT_THRESHOLDS,
): NodeConditionInit[] {
  const ready: NodeConditionInit = m.runtimeError === undefined
    ? {
      type: "Ready",
      status: NodeCondition_Status.HEALTHY,
      reason: "ArhatReady",
      message: "arhat is posting ready status",
    }
    : {
      type: "Ready",
      status: NodeCondition_Status.UNHEALTHY,
      reason: "ContainerRuntimeUnavailable",
      message: `container runtime is down: ${m.runtimeError}`,
    };
  return [
    ready,
    pressure({
      type: "MemoryPressure",
      measured: m.memory,
      what: "memory",
      threshold: thresholds.memoryAvailablePercent,
      reasons: [
        "ArhatHasSufficientMemory",
        "ArhatHasInsufficientMemory",
        "ArhatCannotMeasureMemory",
      ],
      format: formatBytes,
    }),
    pressure({
      type: "DiskPressure",
      measured: m.disk,
      what: "disk space",
      threshold: thresholds.diskAvailablePercent,
      reasons: ["ArhatHasNoDiskPressure", "ArhatHasDiskPressure", "ArhatCannotMeasureDisk"],
      format: formatBytes,
    }),
    pressure({
      type: "PIDPressure",
      measured: m.pids.ok
        ? {
          ok: true,
          value: { total: m.pids.value.max, available: m.pids.value.max - m.pids.value.used },
        }
        : m.pids,
      what: "process ids",
      threshold: thresholds.pidsAvailablePercent,
      reasons: ["ArhatHasSufficientPID", "ArhatHasInsufficientPID", "ArhatCannotMeasurePID"],
      format: String,
    }),
  ];
}

interface PressureInput {
  type: string;
  measured: Measured<{ total: number; available: number }>;
  what: string;
  threshold: number;
  /** [no pressure, pressure, unknown]. */
  reasons: [string, string, string];
  format: (n: number) => string;
}

function pressure(p: PressureInput): NodeConditionInit {
  if (!p.measured.ok) {
    return {
      type: p.type,
      status: NodeCondition_Status.UNSPECIFIED,
      reason: p.reasons[2],
      message: p.measured.error,
    };
  }
  const { total, available } = p.measured.value;
  if (!(total > 0)) {
    return {
      type: p.type,
      status: NodeCondition_Status.UNSPECIFIED,
      reason: p.reasons[2],
      message: `total ${p.what} reported as ${total}`,
    };
  }
  const percent = (Math.max(0, available) / total) * 100;
  const under = percent < p.threshold;
  const figures = `${p.format(Math.max(0, available))} of ${p.format(total)} ${p.what} available (${
    percent.toFixed(1)
  }%)`;
  return {
    type: p.type,
    status: under ? NodeCondition_Status.UNHEALTHY : NodeCondition_Status.HEALTHY,
    reason: under ? p.reasons[1] : p.reasons[0],
    message: `${figures}, ${under ? "below" : "at or above"} the ${p.threshold}% threshold`,
  };
}

/** "1.5 GiB"-style binary units. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}
