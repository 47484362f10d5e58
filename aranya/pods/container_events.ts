/**
 * The kubelet's container Events, derived from two pod statuses: the one the
 * API holds and the one about to be written. What `kubectl describe pod`
 * shows (Created, Started, BackOff, Failed), and what tools and the
 * conformance suite watch for ("Started" as the sign a container ran).
 *
 * Level-based: a container instance is "new" when the status to write names
 * a container ID the API's status does not, so an aranya restart (which
 * reads the API's status back) never repeats an Event, and a container that
 * started and ended between two writes still gets its Started Event.
 */
import type { V1ContainerStatus, V1PodStatus } from "@kubernetes/client-node";
import type { ContainerStatusJson, PodStatusJson } from "./pod_status.ts";

/** One Event to record about the pod. */
export interface ContainerEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

/** Waiting reasons that are failures, with the Event the kubelet records for them. */
const FAILED_WAITING = new Set([
  "ErrImagePull",
  "CreateContainerError",
  "CreateContainerConfigError",
  "ContainerCannotRun",
  "InvalidImageName",
]);

function instanceId(s: ContainerStatusJson | V1ContainerStatus | undefined): string | undefined {
  if (!s) return undefined;
  const st = s.state as Record<string, { containerID?: string } | undefined> | undefined;
  return s.containerID ?? st?.terminated?.containerID;
}

function waitingOf(
  s: ContainerStatusJson | V1ContainerStatus | undefined,
): { reason?: string; message?: string } | undefined {
  const st = s?.state as Record<string, { reason?: string; message?: string } | undefined>;
  return st?.waiting;
}

function hasRun(s: ContainerStatusJson): boolean {
  return s.state.running !== undefined ||
    (s.state.terminated !== undefined && s.state.terminated.startedAt != null);
}

/** The Events for the change from `before` (the API's status) to `after`. */
export function containerEvents(
  before: V1PodStatus | undefined,
  after: PodStatusJson,
  podName: string,
): ContainerEvent[] {
  const out: ContainerEvent[] = [];
  const lists: [ContainerStatusJson[], V1ContainerStatus[] | undefined][] = [
    [after.initContainerStatuses, before?.initContainerStatuses],
    [after.containerStatuses, before?.containerStatuses],
    [after.ephemeralContainerStatuses ?? [], before?.ephemeralContainerStatuses],
  ];
  for (const [now, then] of lists) {
    const old = new Map((then ?? []).map((s) => [s.name, s]));
    for (const s of now) {
      const prev = old.get(s.name);
      const id = instanceId(s);
      if (id && hasRun(s) && id !== instanceId(prev)) {
        out.push({ type: "Normal", reason: "Created", message: `Created container: ${s.name}` });
        out.push({ type: "Normal", reason: "Started", message: `Started container ${s.name}` });
      }
      const w = waitingOf(s);
      const wasReason = waitingOf(prev)?.reason;
      if (!w?.reason || w.reason === wasReason) continue;
      if (w.reason === "CrashLoopBackOff") {
        out.push({
          type: "Warning",
          reason: "BackOff",
          message: `Back-off restarting failed container ${s.name} in pod ${podName}`,
        });
      } else if (w.reason === "ImagePullBackOff") {
        out.push({
          type: "Warning",
          reason: "BackOff",
          message: `Back-off pulling image "${s.image}"`,
        });
      } else if (FAILED_WAITING.has(w.reason)) {
        out.push({
          type: "Warning",
          reason: "Failed",
          message: `Error: ${w.message || w.reason}`,
        });
      }
    }
  }
  return out;
}
