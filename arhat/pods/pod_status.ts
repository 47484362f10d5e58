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
  type PodStatusMsg,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "../../proto/gen/aranya/pod_pb.ts";
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
export type ContainerStatusInit = Fields<ContainerStatus>;

/** A PodStatusMsg as plain fields. */
export type PodStatusInit = Omit<Fields<PodStatusMsg>, "containers"> & {
  containers: ContainerStatusInit[];
};

/** What status computation needs to know of the desired pod (when known). */
export interface PodIntent {
  restartPolicy: RestartPolicy;
  initContainers: string[];
  containers: string[];
  /** Waiting reasons of containers that could not be created (e.g. ErrImagePull). */
  waiting?: Map<string, { reason: string; message: string }>;
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

function containerStatus(
  name: string,
  c: ContainerInfo | undefined,
  init: boolean,
  intent?: PodIntent,
): ContainerStatusInit {
  const waiting = intent?.waiting?.get(name);
  if (!c) {
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
      reason: waiting?.reason ?? (init ? "PodInitializing" : "ContainerCreating"),
      message: waiting?.message ?? "",
      ready: false,
      init,
    };
  }
  const running = c.state === "running" || c.state === "restarting" || c.state === "paused";
  const terminated = c.state === "exited" || c.state === "dead";
  return {
    name,
    containerId: c.id,
    image: c.image,
    imageId: c.imageId,
    state: running
      ? ContainerStatus_State.RUNNING
      : terminated
      ? ContainerStatus_State.TERMINATED
      : ContainerStatus_State.WAITING,
    createdAt: time(c.createdAt),
    startedAt: time(c.startedAt),
    finishedAt: terminated ? time(c.finishedAt) : "",
    exitCode: terminated ? c.exitCode : 0,
    restartCount: Number(c.labels[LABEL_RESTART_COUNT] ?? 0),
    reason: terminated ? (c.exitCode === 0 ? "Completed" : "Error") : waiting?.reason ?? "",
    message: terminated ? c.error : waiting?.message ?? "",
    ready: running && !init,
    init,
  };
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
  const statuses = [
    ...initNames.map((n) => containerStatus(n, latest.get(n), true, intent)),
    ...appNames.map((n) => containerStatus(n, latest.get(n), false, intent)),
  ];
  const policy = intent?.restartPolicy ?? RestartPolicy.ALWAYS;
  const apps = statuses.filter((s) => !s.init);
  const inits = statuses.filter((s) => s.init);
  const willRestart = (s: ContainerStatusInit) =>
    policy === RestartPolicy.ALWAYS ||
    (policy === RestartPolicy.ON_FAILURE && s.exitCode !== 0);
  let phase: PodStatusMsg_Phase;
  const initFailed = inits.some((s) =>
    s.state === ContainerStatus_State.TERMINATED && s.exitCode !== 0 &&
    policy === RestartPolicy.NEVER
  );
  const initsDone = inits.every((s) =>
    s.state === ContainerStatus_State.TERMINATED && s.exitCode === 0
  );
  if (initFailed) phase = PodStatusMsg_Phase.FAILED;
  else if (!initsDone || apps.length === 0) phase = PodStatusMsg_Phase.PENDING;
  else if (apps.some((s) => s.state === ContainerStatus_State.RUNNING)) {
    phase = PodStatusMsg_Phase.RUNNING;
  } else if (apps.every((s) => s.state === ContainerStatus_State.TERMINATED)) {
    if (apps.some(willRestart)) phase = PodStatusMsg_Phase.RUNNING;
    else if (apps.every((s) => s.exitCode === 0)) phase = PodStatusMsg_Phase.SUCCEEDED;
    else phase = PodStatusMsg_Phase.FAILED;
  } else phase = PodStatusMsg_Phase.PENDING;
  return {
    uid: labels[LABEL_POD_UID] ?? "",
    namespace: labels[LABEL_POD_NAMESPACE] ?? "",
    name: labels[LABEL_POD_NAME] ?? "",
    phase,
    containers: statuses,
    podIp: infra?.ipAddress ?? "",
    hostIp: "",
    startedAt: time(infra?.startedAt ?? ""),
    reason: "",
    message: "",
    specHash: labels[LABEL_SPEC_HASH] ?? "",
  };
}
