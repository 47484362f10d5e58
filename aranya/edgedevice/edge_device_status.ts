/**
 * The EdgeDevice's status as a pure function of what happened (pure: the
 * callers read, apply one of these and write):
 *
 * - `phase`: Pending until the device first connects, then Connected or
 *   Disconnected (the STATUS column of `kubectl get ed`);
 * - conditions `Connected` (the link) and `NodeReady` (the Node's Ready as the
 *   device reports it); a condition's lastTransitionTime changes only when its
 *   status does;
 * - `lastSeen`: set on connect, on disconnect and on each periodic sync;
 * - `agent`: what the device said about itself when it connected;
 * - condition `NodeOwned`: False (reason NodeNameTaken) while the Node name is
 *   taken by a Node aranya did not create for this EdgeDevice;
 * - `virtualPod`: the uid of the virtual pod aranya created.
 */
import {
  type AgentInfo,
  CONDITION_CONNECTED,
  CONDITION_NODE_OWNED,
  CONDITION_NODE_READY,
  type EdgeDeviceCondition,
  type EdgeDeviceStatus,
  REASON_DISCONNECTED,
  REASON_NODE_NAME_TAKEN,
} from "./types.ts";

/** Reason of Connected/NodeReady before the device's first connection. */
export const REASON_NEVER_CONNECTED = "NeverConnected";
/** Reason of Connected=True. */
export const REASON_CONNECTED = "EdgeDeviceConnected";

/** RFC 3339 in whole seconds, as Kubernetes writes times. */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, "Z");
}

/** `conditions` with `next` replacing the condition of its type (added if missing). */
export function setCondition(
  conditions: EdgeDeviceCondition[] | undefined,
  next: Omit<EdgeDeviceCondition, "lastTransitionTime">,
  now: Date,
): EdgeDeviceCondition[] {
  const list = conditions ?? [];
  const prev = list.find((c) => c.type === next.type);
  const cond: EdgeDeviceCondition = {
    ...next,
    lastTransitionTime: prev && prev.status === next.status && prev.lastTransitionTime
      ? prev.lastTransitionTime
      : rfc3339(now),
  };
  return prev ? list.map((c) => c === prev ? cond : c) : [...list, cond];
}

/** Reason of NodeOwned=True. */
export const REASON_NODE_OWNED = "NodeCreatedForDevice";

/**
 * The status a new device starts with (fields already set are kept), once its
 * Node is owned; `virtualPod` records the virtual pod aranya created (absent:
 * the recorded one is kept).
 */
export function pendingStatus(
  current: EdgeDeviceStatus | undefined,
  node: string,
  now: Date,
  virtualPod?: { name: string; uid: string },
): EdgeDeviceStatus {
  let conditions = setCondition(current?.conditions, {
    type: CONDITION_NODE_OWNED,
    status: "True",
    reason: REASON_NODE_OWNED,
    message: `Node "${node}" was created for this EdgeDevice`,
  }, now);
  if (!conditions.some((c) => c.type === CONDITION_CONNECTED)) {
    conditions = setCondition(conditions, {
      type: CONDITION_CONNECTED,
      status: "False",
      reason: REASON_NEVER_CONNECTED,
      message: "The device has not connected yet",
    }, now);
  }
  if (!conditions.some((c) => c.type === CONDITION_NODE_READY)) {
    conditions = setCondition(conditions, {
      type: CONDITION_NODE_READY,
      status: "Unknown",
      reason: REASON_NEVER_CONNECTED,
      message: "The device has not reported its state yet",
    }, now);
  }
  return {
    ...current,
    phase: current?.phase ?? "Pending",
    node,
    conditions,
    virtualPod: virtualPod ?? current?.virtualPod,
  };
}

/**
 * The status while the device's Node name is taken by a Node that is not this
 * EdgeDevice's (`why` says whose): nothing is provisioned, `node` is cleared.
 */
export function nodeTakenStatus(
  current: EdgeDeviceStatus | undefined,
  why: string,
  now: Date,
): EdgeDeviceStatus {
  const { node: _node, ...rest } = current ?? {};
  return {
    ...rest,
    phase: current?.phase ?? "Pending",
    conditions: setCondition(current?.conditions, {
      type: CONDITION_NODE_OWNED,
      status: "False",
      reason: REASON_NODE_NAME_TAKEN,
      message: why,
    }, now),
  };
}

/** The Node's Ready condition, as far as the EdgeDevice repeats it. */
export interface NodeReadyInfo {
  status?: string;
  reason?: string;
  message?: string;
}

function nodeReadyCondition(ready: NodeReadyInfo | undefined): Omit<
  EdgeDeviceCondition,
  "lastTransitionTime"
> {
  const status = ready?.status === "True" || ready?.status === "False" ? ready.status : "Unknown";
  return {
    type: CONDITION_NODE_READY,
    status,
    reason: ready?.reason || (status === "Unknown" ? "NodeStatusUnknown" : "NodeReady"),
    message: ready?.message ?? "",
  };
}

/** What is known when the device's link comes up. */
export interface ConnectedInfo {
  node: string;
  /** Transport of the link ("websocket", "grpc", "mqtt"). */
  transport: string;
  /** The Node's Ready condition after the first status sync (absent if it failed). */
  nodeReady?: NodeReadyInfo;
  /** The agent (absent if the device did not say: the previous value is kept). */
  agent?: AgentInfo;
  now: Date;
}

/** The status once the device's link is up. */
export function connectedStatus(
  current: EdgeDeviceStatus | undefined,
  info: ConnectedInfo,
): EdgeDeviceStatus {
  let conditions = setCondition(current?.conditions, {
    type: CONDITION_CONNECTED,
    status: "True",
    reason: REASON_CONNECTED,
    message: `The device is connected over ${info.transport}`,
  }, info.now);
  conditions = setCondition(conditions, nodeReadyCondition(info.nodeReady), info.now);
  return {
    ...current,
    phase: "Connected",
    node: info.node,
    lastSeen: rfc3339(info.now),
    agent: info.agent ?? current?.agent,
    conditions,
  };
}

/** The status after a periodic (or change-triggered) status sync while connected. */
export function syncedStatus(
  current: EdgeDeviceStatus | undefined,
  nodeReady: NodeReadyInfo | undefined,
  now: Date,
): EdgeDeviceStatus {
  return {
    ...current,
    lastSeen: rfc3339(now),
    conditions: setCondition(current?.conditions, nodeReadyCondition(nodeReady), now),
  };
}

/** The status once the device's link is lost; `why` says how it closed. */
export function disconnectedStatus(
  current: EdgeDeviceStatus | undefined,
  why: string,
  now: Date,
): EdgeDeviceStatus {
  let conditions = setCondition(current?.conditions, {
    type: CONDITION_CONNECTED,
    status: "False",
    reason: REASON_DISCONNECTED,
    message: why,
  }, now);
  conditions = setCondition(conditions, {
    type: CONDITION_NODE_READY,
    status: "False",
    reason: REASON_DISCONNECTED,
    message: "The edge device's link to aranya is down",
  }, now);
  return { ...current, phase: "Disconnected", lastSeen: rfc3339(now), conditions };
}
