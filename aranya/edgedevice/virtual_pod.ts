/**
 * The virtual pod: pod `<device>` in the device's namespace, bound to its
 * Node, with one container `host` standing for the device itself (kubectl
 * exec/logs/port-forward against it reach the host, when the device allows).
 *
 * Its status follows the device's link (pure functions here; the device
 * session writes them): Pending until the device first connects; Running with
 * PodScheduled/Initialized/ContainersReady/Ready True while connected; when the
 * link is lost ContainersReady/Ready go False (reason EdgeDeviceDisconnected)
 * and the phase stays Running, as for a kubelet that went away.
 */
import type {
  V1ContainerStatus,
  V1Pod,
  V1PodCondition,
  V1PodStatus,
} from "@kubernetes/client-node";
import {
  LABEL_NAME,
  LABEL_ROLE,
  ownerRef,
  REASON_DISCONNECTED,
  TAINT_NAMESPACE,
  VIRTUAL_CONTAINER,
  VIRTUAL_IMAGE,
  VIRTUAL_IMAGE_ID,
} from "./types.ts";

/** Value of the arhat.dev/role label on virtual pods. */
export const ROLE_VIRTUAL_POD = "VirtualPod";

/**
 * The virtual pod to create for device `namespace/name` (EdgeDevice `uid`).
 * Its label is for people and selectors only: aranya recognises the virtual
 * pod by the uid it recorded when it created it, never by the label.
 */
export function virtualPod(namespace: string, name: string, uid: string): V1Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace,
      labels: { [LABEL_ROLE]: ROLE_VIRTUAL_POD, [LABEL_NAME]: name },
      ownerReferences: [ownerRef(name, uid)],
    },
    spec: {
      nodeName: name,
      automountServiceAccountToken: false,
      containers: [{ name: VIRTUAL_CONTAINER, image: VIRTUAL_IMAGE }],
      tolerations: [
        { key: TAINT_NAMESPACE, operator: "Equal", value: namespace, effect: "NoSchedule" },
        { operator: "Exists", effect: "NoExecute" },
      ],
    },
    status: { phase: "Pending" },
  };
}

/** `conditions` with `type` set to `status` (transition time kept when the status is unchanged). */
function setCondition(
  conditions: V1PodCondition[],
  next: V1PodCondition,
  now: Date,
): V1PodCondition[] {
  const prev = conditions.find((c) => c.type === next.type);
  const cond: V1PodCondition = {
    ...next,
    lastTransitionTime: prev?.status === next.status && prev.lastTransitionTime
      ? prev.lastTransitionTime
      : now,
  };
  return prev ? conditions.map((c) => c === prev ? cond : c) : [...conditions, cond];
}

/** What is known when the device connects. */
export interface VirtualPodConnect {
  /** Device name (the virtual container's ID is `aranya://<device>`). */
  device: string;
  /** The kubelet address in the Node's status (absent: left as it is). */
  hostIP?: string;
  now: Date;
}

/** The virtual pod's status while the device is connected. */
export function runningStatus(
  current: V1PodStatus | undefined,
  info: VirtualPodConnect,
): V1PodStatus {
  let conditions = current?.conditions ?? [];
  for (const type of ["PodScheduled", "Initialized", "ContainersReady", "Ready"]) {
    conditions = setCondition(conditions, { type, status: "True" }, info.now);
  }
  const container: V1ContainerStatus = {
    name: VIRTUAL_CONTAINER,
    image: VIRTUAL_IMAGE,
    imageID: VIRTUAL_IMAGE_ID,
    containerID: `aranya://${info.device}`,
    ready: true,
    started: true,
    restartCount: 0,
    state: { running: { startedAt: info.now } },
  };
  const hostIP = info.hostIP ?? current?.hostIP;
  return {
    ...current,
    phase: "Running",
    conditions,
    containerStatuses: [container],
    ...(hostIP ? { hostIP, hostIPs: [{ ip: hostIP }] } : {}),
    startTime: current?.startTime ?? info.now,
  };
}

/** The virtual pod's status once the device's link is lost (phase unchanged). */
export function disconnectedPodStatus(current: V1PodStatus | undefined, now: Date): V1PodStatus {
  const message = "The edge device's link to aranya is down";
  let conditions = current?.conditions ?? [];
  for (const type of ["ContainersReady", "Ready"]) {
    conditions = setCondition(
      conditions,
      { type, status: "False", reason: REASON_DISCONNECTED, message },
      now,
    );
  }
  return {
    ...current,
    conditions,
    containerStatuses: (current?.containerStatuses ?? []).map((c) => ({ ...c, ready: false })),
  };
}
