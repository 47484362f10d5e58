/**
 * The status of a pod computed from its containers as the runtime reports
 * them (pure: no I/O). Kubernetes semantics: phase Pending while init
 * containers run or app containers are not all started; Running while any
 * app container runs (or will be restarted); Succeeded when all app
 * containers exited 0 and will not restart; Failed when any exited non-zero
 * and will not restart.
 */
import {
  type ContainerStatus,
  ContainerStatus_State,
  type ContainerTermination,
  type PodStatusMsg,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerInfo } from "../runtime/runtime.ts";
import {
  INFRA_CONTAINER,
  LABEL_CONTAINER,
  LABEL_POD_NAME,
  LABEL_POD_NAMESPACE,
  LABEL_POD_UID,
  LABEL_RESTART_COUNT,
  LABEL_ROLE,
  LABEL_SPEC_HASH,
} from "./labels.ts";

/** Fields of a generated message without protobuf-es' bookkeeping ($typeName, $unknown). */
type Fields<T> = Omit<T, "$typeName" | "$unknown">;

/** A ContainerStatus as plain fields (what protobuf-es `create` takes). */
export type ContainerStatusInit = Omit<Fields<ContainerStatus>, "lastTermination" | "ephemeral"> & {
  lastTermination?: Fields<ContainerTermination>;
  ephemeral?: boolean;
};

/** A PodStatusMsg as plain fields. */
export type PodStatusInit = Omit<Fields<PodStatusMsg>, "containers"> & {
  containers: ContainerStatusInit[];
};

/** What status computation needs to know of the desired pod (when known). */
export interface PodIntent {
  restartPolicy: RestartPolicy;
  initContainers: string[];
  containers: string[];
  /** Ephemeral containers (never restarted; outside the pod's phase and readiness). */
  ephemeralContainers?: string[];
  /** Waiting reasons of containers that could not be created (e.g. ErrImagePull). */
  waiting?: Map<string, { reason: string; message: string }>;
  /** Containers (by name) waiting out a restart back-off, and its length. */
  backoff?: Map<string, { delayMs: number }>;
  /** Probe state of a container instance (by engine id); undefined: not probed yet. */
  probes?: (containerId: string) => { started: boolean; ready: boolean } | undefined;
  /** Termination messages of ended container instances (by engine id). */
  terminationMessages?: Map<string, string>;
  /** "<namespace>/<name>" and uid of the pod, for messages. */
  pod?: { namespace: string; name: string; uid: string };
}

/** Whether an instance ended: exited, dead, or created but refused by the engine at start. */
export function hasEnded(c: ContainerInfo): boolean {
  return c.state === "exited" || c.state === "dead" || (c.state === "created" && c.error !== "");
}

/** The kubelet's reason for an ended instance. */
export function endReason(c: ContainerInfo): string {
  if (c.oomKilled) return "OOMKilled";
  if (c.error !== "") return "ContainerCannotRun";
  return c.exitCode === 0 ? "Completed" : "Error";
}

/** The exit code of an ended instance (128 when the engine could not run it and reports 0). */
function endCode(c: ContainerInfo): number {
  return c.error !== "" && c.exitCode === 0 ? 128 : c.exitCode;
}

const time = (t: string) => (t && !t.startsWith("0001-01-01") ? t : "");

/** The newest instance of each container (by restart count), ignoring the infra container. */
export function latestByContainer(containers: ContainerInfo[]): Map<string, ContainerInfo> {
  const out = new Map<string, ContainerInfo>();
  for (const c of containers) {
    const name = c.labels[LABEL_CONTAINER];
    if (!name || name === INFRA_CONTAINER) continue;
    const prev = out.get(name);
    const n = Number(c.labels[LABEL_RESTART_COUNT] ?? 0);
    if (!prev || Number(prev.labels[LABEL_RESTART_COUNT] ?? 0) < n) out.set(name, c);
  }
  return out;
}

function waitingStatus(
  name: string,
  init: boolean,
  reason: string,
  message: string,
): ContainerStatusInit {
  return {
    name,
    containerId: "",
    image: "",
    imageId: "",
    state: ContainerStatus_State.WAITING,
    createdAt: "",
    startedAt: "",
    finishedAt: "",
    exitCode: 0,
    restartCount: 0,
    reason,
    message,
    ready: false,
    init,
    started: false,
    ephemeral: false,
  };
}

function termination(c: ContainerInfo, intent?: PodIntent) {
  return {
    exitCode: endCode(c),
    reason: endReason(c),
    message: intent?.terminationMessages?.get(c.id) || c.error,
    startedAt: time(c.startedAt),
    finishedAt: time(c.finishedAt),
    containerId: c.id,
  };
}

function containerStatus(
  name: string,
  c: ContainerInfo | undefined,
  previous: ContainerInfo | undefined,
  init: boolean,
  initializing: boolean,
  intent?: PodIntent,
): ContainerStatusInit {
  const waiting = intent?.waiting?.get(name);
  if (!c) {
    return waitingStatus(
      name,
      init,
      // Like the kubelet: every container waits with PodInitializing until the init containers
      // are done.
      waiting?.reason ?? (init || initializing ? "PodInitializing" : "ContainerCreating"),
      waiting?.message ?? "",
    );
  }
  const running = c.state === "running" || c.state === "restarting" || c.state === "paused";
  const ended = hasEnded(c);
  const probe = running ? intent?.probes?.(c.id) : undefined;
  const restartCount = Number(c.labels[LABEL_RESTART_COUNT] ?? 0);
  // A back-off matters only for a container that will be restarted (the kubelet's
  // CrashLoopBackOff); one that ended for good is reported terminated.
  const policy = intent?.restartPolicy ?? RestartPolicy.ALWAYS;
  const restarts = !init
    ? policy === RestartPolicy.ALWAYS ||
      (policy === RestartPolicy.ON_FAILURE && (c.exitCode !== 0 || c.error !== ""))
    : policy !== RestartPolicy.NEVER && (c.exitCode !== 0 || c.error !== "");
  const backoff = restarts ? intent?.backoff?.get(name) : undefined;
  const base = {
    name,
    containerId: c.id,
    image: c.image,
    imageId: c.imageId,
    createdAt: time(c.createdAt),
    restartCount,
    init,
    ephemeral: false,
  };
  if (ended && backoff) {
    // Waiting out the back-off before the next restart: the kubelet's CrashLoopBackOff.
    const p = intent?.pod;
    return {
      ...base,
      state: ContainerStatus_State.WAITING,
      startedAt: "",
      finishedAt: "",
      exitCode: 0,
      reason: "CrashLoopBackOff",
      message: `back-off ${
        Math.round(backoff.delayMs / 1000)
      }s restarting failed container=${name} pod=${
        p ? `${p.name}_${p.namespace}(${p.uid})` : c.labels[LABEL_POD_NAME] ?? ""
      }`,
      ready: false,
      started: false,
      lastTermination: termination(c, intent),
    };
  }
  if (ended) {
    const t = termination(c, intent);
    return {
      ...base,
      state: ContainerStatus_State.TERMINATED,
      startedAt: t.startedAt,
      finishedAt: t.finishedAt,
      exitCode: t.exitCode,
      reason: t.reason,
      message: t.message,
      // The kubelet marks an init container that completed successfully ready.
      ready: init && t.exitCode === 0 && c.error === "",
      started: false,
      lastTermination: previous && hasEnded(previous) ? termination(previous, intent) : undefined,
    };
  }
  return {
    ...base,
    state: running ? ContainerStatus_State.RUNNING : ContainerStatus_State.WAITING,
    startedAt: time(c.startedAt),
    finishedAt: "",
    exitCode: 0,
    reason: running ? "" : waiting?.reason ?? "ContainerCreating",
    message: running ? "" : waiting?.message ?? "",
    ready: running && !init && (probe ? probe.ready : true),
    started: running && (probe ? probe.started : true),
    lastTermination: previous && hasEnded(previous) ? termination(previous, intent) : undefined,
  };
}

/** The instance before `c` (restart count one lower), if it is still kept. */
function previousOf(containers: ContainerInfo[], c: ContainerInfo | undefined) {
  if (!c) return undefined;
  const n = Number(c.labels[LABEL_RESTART_COUNT] ?? 0) - 1;
  return containers.find((x) =>
    x.labels[LABEL_CONTAINER] === c.labels[LABEL_CONTAINER] &&
    Number(x.labels[LABEL_RESTART_COUNT] ?? 0) === n
  );
}

/**
 * Computes a pod's status from its containers. `intent` (the journaled spec)
 * adds containers not created yet and the restart policy; without it (a pod
 * found only in the runtime) the status describes what exists.
 */
export function computePodStatus(containers: ContainerInfo[], intent?: PodIntent): PodStatusInit {
  const any = containers[0];
  const labels = any?.labels ?? {};
  const infra = containers.find((c) => c.labels[LABEL_ROLE] === "infra");
  const latest = latestByContainer(containers);
  const initNames = intent?.initContainers ??
    [...latest.values()].filter((c) => c.labels[LABEL_ROLE] === "init").map((c) =>
      c.labels[LABEL_CONTAINER]!
    );
  const appNames = intent?.containers ??
    [...latest.values()].filter((c) => c.labels[LABEL_ROLE] === "app").map((c) =>
      c.labels[LABEL_CONTAINER]!
    );
  const initializing = initNames.some((n) => {
    const c = latest.get(n);
    return !c || c.state !== "exited" || c.exitCode !== 0 || c.error !== "";
  });
  const status = (n: string, init: boolean) => {
    const c = latest.get(n);
    return containerStatus(n, c, previousOf(containers, c), init, initializing, intent);
  };
  const ephemeralNames = intent?.ephemeralContainers ??
    [...latest.values()].filter((c) => c.labels[LABEL_ROLE] === "ephemeral").map((c) =>
      c.labels[LABEL_CONTAINER]!
    );
  const statuses = [
    ...initNames.map((n) => status(n, true)),
    ...appNames.map((n) => status(n, false)),
  ];
  // Ephemeral containers: reported, never restarted, no part of the phase.
  const ephemeral = ephemeralNames.map((n) => ({
    ...containerStatus(n, latest.get(n), undefined, false, false, {
      ...intent ?? { initContainers: [], containers: [] },
      restartPolicy: RestartPolicy.NEVER,
    } as PodIntent),
    ready: false,
    ephemeral: true,
  }));
  const policy = intent?.restartPolicy ?? RestartPolicy.ALWAYS;
  const apps = statuses.filter((s) => !s.init);
  const inits = statuses.filter((s) => s.init);
  const initFailed = inits.some((s) => {
    const t = s.state === ContainerStatus_State.TERMINATED ? s : s.lastTermination;
    return t !== undefined && t.exitCode !== 0 && policy === RestartPolicy.NEVER;
  });
  const initsDone = inits.every((s) =>
    s.state === ContainerStatus_State.TERMINATED && s.exitCode === 0
  );
  let phase: PodStatusMsg_Phase;
  if (initFailed) phase = PodStatusMsg_Phase.FAILED;
  else if (!initsDone || apps.length === 0) phase = PodStatusMsg_Phase.PENDING;
  else phase = appPhase(apps, policy);
  return {
    uid: labels[LABEL_POD_UID] ?? "",
    namespace: labels[LABEL_POD_NAMESPACE] ?? "",
    name: labels[LABEL_POD_NAME] ?? "",
    phase,
    containers: [...statuses, ...ephemeral],
    podIp: infra?.ipAddress ?? "",
    hostIp: "",
    startedAt: time(infra?.startedAt ?? ""),
    reason: "",
    message: "",
    specHash: labels[LABEL_SPEC_HASH] ?? "",
  };
}

/**
 * The kubelet's phase of a pod whose init containers are done: a container
 * waiting to restart (it has a last termination) counts as stopped; any
 * running container makes the pod Running; all stopped makes it Running while
 * the restart policy restarts them, else Succeeded or Failed by exit codes.
 */
function appPhase(apps: ContainerStatusInit[], policy: RestartPolicy): PodStatusMsg_Phase {
  let running = 0, waiting = 0, stopped = 0, succeeded = 0;
  for (const s of apps) {
    if (s.state === ContainerStatus_State.RUNNING) running++;
    else if (s.state === ContainerStatus_State.TERMINATED) {
      stopped++;
      if (s.exitCode === 0) succeeded++;
    } else if (s.lastTermination) {
      stopped++;
      if (s.lastTermination.exitCode === 0) succeeded++;
    } else waiting++;
  }
  if (waiting > 0) return PodStatusMsg_Phase.PENDING;
  if (running > 0) return PodStatusMsg_Phase.RUNNING;
  if (stopped === apps.length) {
    if (policy === RestartPolicy.ALWAYS) return PodStatusMsg_Phase.RUNNING;
    if (stopped === succeeded) return PodStatusMsg_Phase.SUCCEEDED;
    if (policy === RestartPolicy.NEVER) return PodStatusMsg_Phase.FAILED;
    return PodStatusMsg_Phase.RUNNING;
  }
  return PodStatusMsg_Phase.PENDING;
}
