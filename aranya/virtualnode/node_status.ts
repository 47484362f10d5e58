/** Turns the device's NodeStatusMsg into the Node's status (pure). */
import type { V1NodeCondition, V1NodeStatus } from "@kubernetes/client-node";
import { NodeCondition_Status, type NodeStatusMsg } from "@aranya/proto/gen/aranya/node_pb";
import { type AgentInfo, REASON_DISCONNECTED } from "../edgedevice/types.ts";

/** Reason of Ready=False when the device's link is gone. */
export { REASON_DISCONNECTED };

const status = (s: NodeCondition_Status, pressure: boolean): "True" | "False" | "Unknown" => {
  if (s === NodeCondition_Status.UNSPECIFIED) return "Unknown";
  const healthy = s === NodeCondition_Status.HEALTHY;
  return pressure ? (healthy ? "False" : "True") : (healthy ? "True" : "False");
};

/**
 * Node status fields from the device (keeps `addresses` and `daemonEndpoints`
 * of `current`). `maxPods` (the EdgeDevice's spec.pod.allocatable) caps the
 * pod capacity the device reports.
 */
export function nodeStatusFrom(
  msg: NodeStatusMsg,
  current: V1NodeStatus | undefined,
  now = new Date(),
  maxPods?: number,
): V1NodeStatus {
  const cap = msg.capacity;
  const alloc = msg.allocatable ?? cap;
  const pods = (n: bigint | undefined) => {
    const device = Number(n ?? 0n);
    if (maxPods === undefined) return device;
    return device > 0 ? Math.min(device, maxPods) : maxPods;
  };
  const resources = (r: typeof cap) => ({
    cpu: `${Number(r?.cpuMillis ?? 0n)}m`,
    memory: String(r?.memoryBytes ?? 0n),
    "ephemeral-storage": String(r?.storageBytes ?? 0n),
    pods: String(pods(r?.pods)),
  });
  const conditions: V1NodeCondition[] = msg.conditions.map((c) => {
    const pressure = c.type !== "Ready";
    const s = status(c.status, pressure);
    const prev = current?.conditions?.find((p) => p.type === c.type);
    return {
      type: c.type,
      status: s,
      reason: c.reason ||
        (c.type === "Ready" ? (s === "True" ? "EdgeDeviceReady" : "EdgeDeviceNotReady") : c.type),
      message: c.message,
      lastHeartbeatTime: now,
      lastTransitionTime: prev?.status === s ? prev.lastTransitionTime : now,
    };
  });
  const si = msg.systemInfo;
  return {
    ...current,
    capacity: resources(cap),
    allocatable: resources(alloc),
    conditions,
    nodeInfo: {
      architecture: si?.arch ?? "",
      bootID: si?.bootId ?? "",
      containerRuntimeVersion: si?.runtimeName ? `${si.runtimeName}://${si.runtimeVersion}` : "",
      kernelVersion: si?.kernelVersion ?? "",
      kubeProxyVersion: "",
      kubeletVersion: `arhat/${si?.agentVersion ?? "unknown"}`,
      machineID: si?.machineId ?? "",
      operatingSystem: si?.os ?? "",
      osImage: si?.osImage ?? "",
      systemUUID: si?.systemUuid ?? "",
    },
  };
}

/**
 * The well-known Node labels a kubelet sets from its system (os and arch, and
 * the beta aliases upstream still sets); empty when the device did not say.
 */
export function nodeLabelsFrom(msg: NodeStatusMsg): Record<string, string> {
  const si = msg.systemInfo;
  const labels: Record<string, string> = {};
  if (si?.os) {
    labels["kubernetes.io/os"] = si.os;
    labels["beta.kubernetes.io/os"] = si.os;
  }
  if (si?.arch) {
    labels["kubernetes.io/arch"] = si.arch;
    labels["beta.kubernetes.io/arch"] = si.arch;
  }
  return labels;
}

/** The agent as the device describes itself (undefined when the message has no system info). */
export function agentInfoFrom(msg: NodeStatusMsg): AgentInfo | undefined {
  const si = msg.systemInfo;
  if (!si) return undefined;
  return {
    version: si.agentVersion,
    os: si.os,
    arch: si.archVariant ? `${si.arch}/${si.archVariant}` : si.arch,
    runtime: si.runtimeName ? `${si.runtimeName}://${si.runtimeVersion}` : "",
  };
}

/** Marks every condition Unknown and Ready=False (reason EdgeDeviceDisconnected). */
export function disconnectedStatus(
  current: V1NodeStatus | undefined,
  now = new Date(),
): V1NodeStatus {
  const conditions = (current?.conditions ?? []).map((c) =>
    c.type === "Ready"
      ? {
        ...c,
        status: "False",
        reason: REASON_DISCONNECTED,
        message: "The edge device's link to aranya is down",
        lastHeartbeatTime: now,
        lastTransitionTime: c.status === "False" && c.reason === REASON_DISCONNECTED
          ? c.lastTransitionTime
          : now,
      }
      : c
  );
  if (!conditions.some((c) => c.type === "Ready")) {
    conditions.push({
      type: "Ready",
      status: "False",
      reason: REASON_DISCONNECTED,
      message: "The edge device's link to aranya is down",
      lastHeartbeatTime: now,
      lastTransitionTime: now,
    });
  }
  return { ...current, conditions };
}
