/**
 * spec.activeDeadlineSeconds as the kubelet enforces it: a pod that has been
 * active on its node (since status.startTime) longer than the deadline is
 * stopped and marked phase Failed, reason DeadlineExceeded. The field may be
 * set or shortened on a running pod, so it is read on every sync. Pure.
 *
 * @module
 */
import type { V1ContainerStatus, V1Pod } from "@kubernetes/client-node";

/** Reason of a pod stopped for its deadline (the kubelet's). */
export const REASON_DEADLINE_EXCEEDED = "DeadlineExceeded";
/** Message of a pod stopped for its deadline (the kubelet's). */
export const MESSAGE_DEADLINE_EXCEEDED =
  "Pod was active on the node longer than the specified deadline";

/**
 * When `pod`'s active deadline passes (ms since the epoch), or undefined when
 * none applies: no activeDeadlineSeconds, not started yet, or finished for
 * another reason. A pod already failed for its deadline keeps its time, so
 * the caller keeps making sure nothing of it runs.
 */
export function activeDeadlineAt(pod: V1Pod): number | undefined {
  const seconds = pod.spec?.activeDeadlineSeconds;
  if (seconds === undefined || seconds === null) return undefined;
  const phase = pod.status?.phase;
  if (phase === "Succeeded") return undefined;
  if (phase === "Failed" && pod.status?.reason !== REASON_DEADLINE_EXCEEDED) return undefined;
  const start = pod.status?.startTime;
  if (!start) return undefined;
  const t = (start instanceof Date ? start : new Date(String(start))).getTime();
  return Number.isNaN(t) ? undefined : t + seconds * 1000;
}

/** True when `pod` already carries the deadline's Failed status. */
export function isDeadlineExceeded(pod: V1Pod): boolean {
  return pod.status?.phase === "Failed" && pod.status.reason === REASON_DEADLINE_EXCEEDED;
}

type Json = Record<string, unknown>;

/**
 * The status of `pod` once stopped for its deadline (a merge patch of the
 * status subresource): phase Failed, reason and message as the kubelet
 * writes them, Ready and ContainersReady False (PodCompleted), and every
 * container that was not terminated yet terminated as if killed (exit code
 * 137) at `now` (RFC 3339).
 */
export function deadlineExceededStatus(pod: V1Pod, now: string): Json {
  const at = (t: unknown) => (t instanceof Date ? t.toISOString().replace(/\.\d+Z$/, "Z") : t);
  const stopped = (cs: V1ContainerStatus[] | undefined) =>
    (cs ?? []).map((c): Json => {
      const terminated = c.state?.terminated;
      return {
        ...c,
        ready: false,
        started: false,
        state: terminated ? { terminated: { ...terminated } } : {
          terminated: {
            exitCode: 137,
            reason: "Error",
            startedAt: at(c.state?.running?.startedAt) ?? null,
            finishedAt: now,
            ...(c.containerID ? { containerID: c.containerID } : {}),
          },
        },
      };
    });
  const conditions = (pod.status?.conditions ?? []).map((c): Json => {
    if (c.type !== "Ready" && c.type !== "ContainersReady") {
      return { ...c, lastTransitionTime: at(c.lastTransitionTime) };
    }
    return {
      type: c.type,
      status: "False",
      reason: "PodCompleted",
      lastProbeTime: null,
      lastTransitionTime: c.status === "False" ? at(c.lastTransitionTime) : now,
    };
  });
  return {
    phase: "Failed",
    reason: REASON_DEADLINE_EXCEEDED,
    message: MESSAGE_DEADLINE_EXCEEDED,
    conditions,
    containerStatuses: stopped(pod.status?.containerStatuses),
    initContainerStatuses: stopped(pod.status?.initContainerStatuses),
  };
}
