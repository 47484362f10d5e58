/**
 * The device's view of a pod (PodStatusMsg) as a Kubernetes PodStatus, the way
 * a kubelet fills it (pure: no I/O):
 *
 * - phase and reason/message from the device;
 * - conditions PodReadyToStartContainers, Initialized, ContainersReady, Ready,
 *   PodScheduled, keeping each lastTransitionTime while its status holds;
 * - containerStatuses / initContainerStatuses in spec order with state
 *   (waiting/running/terminated), ready, started, restartCount, image and
 *   imageID, containerID as `<runtime>://<id>`; containers the device has not
 *   created yet are waiting with reason ContainerCreating;
 * - hostIP(s), podIP(s) (the host's for hostNetwork pods), startTime.
 *
 * The result is plain JSON (times as RFC 3339 strings), meant for a merge
 * patch of the status subresource.
 */
import type { V1Pod } from "@kubernetes/client-node";
import {
  type ContainerStatus,
  ContainerStatus_State,
  type PodStatusMsg,
  PodStatusMsg_Phase,
} from "@aranya/proto/gen/aranya/pod_pb";

/** A pod condition as JSON. */
export interface PodConditionJson {
  type: string;
  status: "True" | "False";
  reason?: string;
  message?: string;
  lastProbeTime: null;
  lastTransitionTime: string;
}

/** A container status as JSON. */
export interface ContainerStatusJson {
  name: string;
  image: string;
  imageID: string;
  containerID?: string;
  ready: boolean;
  started: boolean;
  restartCount: number;
  state: Record<string, Record<string, unknown>>;
  lastState: Record<string, Record<string, unknown>>;
}

/** The fields of PodStatus aranya owns. */
export interface PodStatusJson {
  phase: string;
  reason?: string;
  message?: string;
  conditions: PodConditionJson[];
  containerStatuses: ContainerStatusJson[];
  initContainerStatuses: ContainerStatusJson[];
  ephemeralContainerStatuses?: ContainerStatusJson[];
  hostIP: string;
  hostIPs: { ip: string }[];
  podIP?: string;
  podIPs?: { ip: string }[];
  startTime?: string;
}

/** What the mapping needs besides the device's message. */
export interface PodStatusContext {
  /** The node's advertised address. */
  hostIP: string;
  /** Scheme of container IDs, from the node's containerRuntimeVersion ("podman", "docker"). */
  runtime: string;
  /** Time for new transitions (RFC 3339); default now. */
  now?: string;
}

const PHASE: Record<number, string> = {
  [PodStatusMsg_Phase.PENDING]: "Pending",
  [PodStatusMsg_Phase.RUNNING]: "Running",
  [PodStatusMsg_Phase.SUCCEEDED]: "Succeeded",
  [PodStatusMsg_Phase.FAILED]: "Failed",
};

/**
 * RFC 3339 without fractions (metav1.Time) from a device's string or an API
 * object's time (a string from a watch, a Date from a read); "" stays undefined.
 */
function seconds(t: unknown): string | undefined {
  if (!t) return undefined;
  const d = t instanceof Date ? t : new Date(String(t));
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString().replace(/\.\d+Z$/, "Z");
}

/** Maps the device's status of `pod` into the Kubernetes status. */
export function podStatusFrom(
  msg: PodStatusMsg,
  pod: V1Pod,
  ctx: PodStatusContext,
): PodStatusJson {
  const now = seconds(ctx.now ?? new Date().toISOString())!;
  type Kind = "i" | "c" | "e";
  const kindOf = (c: ContainerStatus): Kind => c.ephemeral ? "e" : c.init ? "i" : "c";
  const byName = new Map(msg.containers.map((c) => [`${kindOf(c)}/${c.name}`, c]));
  const specs = (k: Kind) =>
    k === "i"
      ? pod.spec?.initContainers
      : k === "e"
      ? pod.spec?.ephemeralContainers
      : pod.spec?.containers;
  const image = (name: string, k: Kind) => specs(k)?.find((c) => c.name === name)?.image ?? "";
  // Still initializing while any init container has not completed successfully.
  const initializing = (pod.spec?.initContainers ?? []).some((c) => {
    const s = byName.get(`i/${c.name}`);
    return !s || s.state !== ContainerStatus_State.TERMINATED || s.exitCode !== 0;
  });
  const toJson = (name: string, init: boolean, k: Kind = init ? "i" : "c"): ContainerStatusJson => {
    const c = byName.get(`${k}/${name}`);
    if (!c) {
      return {
        name,
        image: image(name, k),
        imageID: "",
        ready: false,
        started: false,
        restartCount: 0,
        state: {
          waiting: {
            reason: init || (k === "c" && initializing) ? "PodInitializing" : "ContainerCreating",
          },
        },
        lastState: {},
      };
    }
    return containerJson(c, image(name, k), ctx.runtime);
  };
  const initContainerStatuses = (pod.spec?.initContainers ?? []).map((c) => toJson(c.name, true));
  const containerStatuses = (pod.spec?.containers ?? []).map((c) => toJson(c.name, false));
  const phase = PHASE[msg.phase] ?? "Pending";
  const initialized = initContainerStatuses.every((s) => s.state.terminated?.exitCode === 0) ||
    phase === "Running" || phase === "Succeeded";
  const containersReady = containerStatuses.length > 0 && containerStatuses.every((s) => s.ready);
  const previous = new Map(
    (pod.status?.conditions ?? []).map((c) => [c.type, c]),
  );
  const cond = (
    type: string,
    ok: boolean,
    reason?: string,
    message?: string,
  ): PodConditionJson => {
    const prev = previous.get(type);
    const status = ok ? "True" : "False";
    const since = prev?.status === status ? seconds(prev.lastTransitionTime) ?? now : now;
    return {
      type,
      status,
      ...(ok || !reason ? {} : { reason }),
      ...(ok || !message ? {} : { message }),
      lastProbeTime: null,
      lastTransitionTime: since,
    };
  };
  // The kubelet's condition messages name the containers in question, in spec order.
  const incompleteNames = initContainerStatuses.filter((s) => s.state.terminated?.exitCode !== 0)
    .map((s) => s.name);
  const incomplete = incompleteNames.length
    ? `containers with incomplete status: [${incompleteNames.join(" ")}]`
    : undefined;
  const unready = containerStatuses.filter((s) => !s.ready).map((s) => s.name);
  const unreadyMessage = phase === "Succeeded" || phase === "Failed" || unready.length === 0
    ? undefined
    : `containers with unready status: [${unready.join(" ")}]`;
  // Readiness gates: the pod is Ready only when every gate's condition (set by others) is True.
  const gates = (pod.spec?.readinessGates ?? []).filter((g) =>
    previous.get(g.conditionType)?.status !== "True"
  );
  const readyMessage = () =>
    unreadyMessage ??
      (gates.length
        ? `corresponding condition of pod readiness gate "${
          gates[0]!.conditionType
        }" does not exist.`
        : undefined);
  const notReady = phase === "Succeeded" || phase === "Failed"
    ? "PodCompleted"
    : containersReady && gates.length
    ? "ReadinessGatesNotReady"
    : "ContainersNotReady";
  const hostNetwork = pod.spec?.hostNetwork ?? false;
  const podIP = hostNetwork ? ctx.hostIP : msg.podIp;
  const status: PodStatusJson = {
    phase,
    conditions: [
      cond("PodReadyToStartContainers", msg.phase !== PodStatusMsg_Phase.DELETED),
      cond("Initialized", initialized, "ContainersNotInitialized", incomplete),
      cond("Ready", containersReady && gates.length === 0, notReady, readyMessage()),
      cond("ContainersReady", containersReady, notReady, unreadyMessage),
      cond("PodScheduled", true),
    ],
    containerStatuses,
    initContainerStatuses,
    ...(pod.spec?.ephemeralContainers?.length
      ? {
        ephemeralContainerStatuses: pod.spec.ephemeralContainers.map((c) =>
          toJson(c.name, false, "e")
        ),
      }
      : {}),
    hostIP: ctx.hostIP,
    hostIPs: [{ ip: ctx.hostIP }],
  };
  if (msg.reason) status.reason = msg.reason;
  if (msg.message) status.message = msg.message;
  if (podIP) {
    status.podIP = podIP;
    status.podIPs = [{ ip: podIP }];
  }
  const start = seconds(msg.startedAt) ?? seconds(pod.status?.startTime);
  if (start) status.startTime = start;
  return status;
}

function containerJson(
  c: ContainerStatus,
  specImage: string,
  runtime: string,
): ContainerStatusJson {
  const id = c.containerId ? `${runtime}://${c.containerId}` : undefined;
  let state: ContainerStatusJson["state"];
  switch (c.state) {
    case ContainerStatus_State.RUNNING:
      state = { running: { startedAt: seconds(c.startedAt) ?? null } };
      break;
    case ContainerStatus_State.TERMINATED:
      state = {
        terminated: {
          exitCode: c.exitCode,
          reason: c.reason || (c.exitCode === 0 ? "Completed" : "Error"),
          ...(c.message ? { message: c.message } : {}),
          startedAt: seconds(c.startedAt) ?? null,
          finishedAt: seconds(c.finishedAt) ?? null,
          ...(id ? { containerID: id } : {}),
        },
      };
      break;
    default:
      state = {
        waiting: {
          reason: c.reason || "ContainerCreating",
          ...(c.message ? { message: c.message } : {}),
        },
      };
  }
  return {
    name: c.name,
    // The spec's reference, as the kubelet reports it; the device's may be normalized.
    image: specImage || c.image,
    imageID: c.imageId,
    ...(id ? { containerID: id } : {}),
    ready: c.ready,
    started: c.started,
    restartCount: c.restartCount,
    state,
    lastState: c.lastTermination
      ? {
        terminated: {
          exitCode: c.lastTermination.exitCode,
          reason: c.lastTermination.reason ||
            (c.lastTermination.exitCode === 0 ? "Completed" : "Error"),
          ...(c.lastTermination.message ? { message: c.lastTermination.message } : {}),
          startedAt: seconds(c.lastTermination.startedAt) ?? null,
          finishedAt: seconds(c.lastTermination.finishedAt) ?? null,
          ...(c.lastTermination.containerId
            ? { containerID: `${runtime}://${c.lastTermination.containerId}` }
            : {}),
        },
      }
      : {},
  };
}

/**
 * True when `status` differs from what the pod has, comparing only the fields
 * aranya writes (a deep subset check, so fields the API server adds do not
 * count), so unchanged device reports cost no API write.
 */
export function statusChanged(pod: V1Pod, status: PodStatusJson): boolean {
  return !subset(plain(status), plain(pod.status ?? {}));
}

/** JSON round trip: Dates and timestamps become second-precision strings. */
function plain(v: unknown): unknown {
  return JSON.parse(
    JSON.stringify(v),
    (_k, x) =>
      typeof x === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(x)
        ? x.replace(/\.\d+Z$/, "Z")
        : x,
  );
}

function subset(want: unknown, have: unknown): boolean {
  if (Array.isArray(want)) {
    const h = Array.isArray(have) ? have : [];
    return want.length === h.length && want.every((w, i) => subset(w, h[i]));
  }
  if (want && typeof want === "object") {
    const h = (have && typeof have === "object" ? have : {}) as Record<string, unknown>;
    return Object.entries(want).every(([k, w]) => subset(w, h[k]));
  }
  // An empty object or list on our side matches an absent field.
  return want === have || (want === null && have === undefined);
}
