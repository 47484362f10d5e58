/**
 * The status the kubelet writes for a deleted pod once its containers are
 * stopped, before it removes the object (pkg/kubelet: generateAPIPodStatus
 * with podIsTerminal, then the status manager's TerminatePod). A terminal
 * phase is what lets others finish their part: the Job controller removes its
 * `batch.kubernetes.io/job-tracking` finalizer only from a pod in phase
 * Succeeded or Failed. Pure.
 *
 * - containers keep the terminated state the device reports after stopping
 *   them (exit code, reason, times);
 * - a container that is not terminated (the device no longer had it, or it
 *   did not report the end) is terminated with exit code 137, reason
 *   ContainerStatusUnknown, "The container could not be located when the pod
 *   was terminated", once the pod has initialized (regular containers), or up
 *   to the last init container that started (init containers);
 * - phase Succeeded when every regular container terminated with exit code 0,
 *   Failed otherwise (waiting, unknown or a failure); a phase that is already
 *   terminal stays;
 * - PodReadyToStartContainers, Ready and ContainersReady become False.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { V1Pod } from "@kubernetes/client-node";
import {
  type ContainerStatus,
  ContainerStatus_State,
  ContainerStatusSchema,
  type PodStatusMsg,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import { type PodStatusContext, podStatusFrom, type PodStatusJson } from "./pod_status.ts";

/** Reason of a container whose end is not known when its pod terminated (the kubelet's). */
export const REASON_STATUS_UNKNOWN = "ContainerStatusUnknown";
/** Message of such a container (the kubelet's). */
export const MESSAGE_STATUS_UNKNOWN =
  "The container could not be located when the pod was terminated";

/** True when the pod ran a regular container or has no init containers (hasPodInitialized). */
function initialized(pod: V1Pod, apps: (ContainerStatus | undefined)[]): boolean {
  if (!pod.spec?.initContainers?.length) return true;
  const fromApi = (pod.status?.containerStatuses ?? []).some((s) =>
    s.lastState?.terminated !== undefined || s.state?.waiting === undefined
  );
  const fromDevice = apps.some((s) =>
    s !== undefined &&
    (s.lastTermination !== undefined || s.state === ContainerStatus_State.RUNNING ||
      s.state === ContainerStatus_State.TERMINATED)
  );
  return fromApi || fromDevice;
}

/** `s` (or a fresh status named `name`) terminated with the kubelet's unknown end. */
function unknownEnd(name: string, init: boolean, s: ContainerStatus | undefined): ContainerStatus {
  return create(ContainerStatusSchema, {
    name,
    init,
    image: s?.image ?? "",
    imageId: s?.imageId ?? "",
    restartCount: s?.restartCount ?? 0,
    lastTermination: s?.lastTermination,
    state: ContainerStatus_State.TERMINATED,
    exitCode: 137,
    reason: REASON_STATUS_UNKNOWN,
    message: MESSAGE_STATUS_UNKNOWN,
  });
}

const started = (s: ContainerStatus | undefined) =>
  s !== undefined &&
  ((s.state !== ContainerStatus_State.WAITING && s.state !== ContainerStatus_State.UNSPECIFIED) ||
    s.lastTermination !== undefined);

/**
 * The terminal status of deleted `pod`, from what the device reported when it
 * stopped the pod (`msg`: its containers; empty when it did not have it).
 */
export function terminatedPodStatus(
  msg: PodStatusMsg,
  pod: V1Pod,
  ctx: PodStatusContext,
): PodStatusJson {
  const byName = new Map(
    msg.containers.filter((c) => !c.ephemeral).map((c) => [`${c.init ? "i" : "c"}/${c.name}`, c]),
  );
  const apps = (pod.spec?.containers ?? []).map((c) => byName.get(`c/${c.name}`));
  const inits = (pod.spec?.initContainers ?? []).map((c) => byName.get(`i/${c.name}`));
  const ended = (s: ContainerStatus | undefined) => s?.state === ContainerStatus_State.TERMINATED;
  const containers: ContainerStatus[] = [];
  // Init containers up to the last one that started (at least the first) have ended.
  let lastStarted = 0;
  inits.forEach((s, i) => {
    if (started(s)) lastStarted = i;
  });
  (pod.spec?.initContainers ?? []).forEach((c, i) => {
    const s = inits[i];
    if (ended(s)) containers.push(s!);
    else if (i <= lastStarted) containers.push(unknownEnd(c.name, true, s));
    else if (s) containers.push(s);
  });
  const ran = initialized(pod, apps);
  const finalApps = (pod.spec?.containers ?? []).map((c, i) => {
    const s = apps[i];
    if (ended(s)) return s!;
    return ran ? unknownEnd(c.name, false, s) : s;
  });
  for (const s of finalApps) if (s) containers.push(s);
  containers.push(...msg.containers.filter((c) => c.ephemeral));
  const succeeded = finalApps.length > 0 &&
    finalApps.every((s) => ended(s) && s!.exitCode === 0);
  const current = pod.status?.phase;
  const phase = current === "Succeeded"
    ? PodStatusMsg_Phase.SUCCEEDED
    : current === "Failed"
    ? PodStatusMsg_Phase.FAILED
    : succeeded
    ? PodStatusMsg_Phase.SUCCEEDED
    : PodStatusMsg_Phase.FAILED;
  // Nothing runs any more: no container is ready or started.
  const stopped = containers.map((c) => ({ ...c, ready: false, started: false }));
  const status = podStatusFrom(
    create(PodStatusMsgSchema, { ...msg, phase, containers: stopped }),
    pod,
    ctx,
  );
  // The sandbox is gone: PodReadyToStartContainers turns False (podStatusFrom knows only the
  // device's live pods).
  const sandbox = status.conditions.find((c) => c.type === "PodReadyToStartContainers");
  if (sandbox && sandbox.status === "True") {
    const prev = pod.status?.conditions?.find((c) => c.type === "PodReadyToStartContainers");
    const now = new Date(ctx.now ?? Date.now()).toISOString().replace(/\.\d+Z$/, "Z");
    const since = prev?.status === "False" && prev.lastTransitionTime
      ? new Date(prev.lastTransitionTime as unknown as string).toISOString().replace(
        /\.\d+Z$/,
        "Z",
      )
      : now;
    sandbox.status = "False";
    sandbox.lastTransitionTime = since;
  }
  return status;
}
