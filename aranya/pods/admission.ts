/**
 * The kubelet's admission of a pod to its node (pkg/kubelet/lifecycle/
 * predicate.go), for the checks that weigh a pod against the other pods of the
 * node: the pod count, cpu and memory requests against the node's allocatable
 * (the scheduler's NodeResourcesFit) and host ports (NodePorts). A pod that
 * does not fit is rejected as the kubelet's rejectPod does it: phase Failed,
 * reason `NodePorts` / `OutOfpods` / `OutOfcpu` / `OutOfmemory`, message
 * "Pod was rejected: " and the predicate's text; it never runs. Only the first
 * failure is told, in the kubelet's order (resources, then ports). Pure.
 *
 * Admission order decides which pod wins: pods already admitted (the caller
 * knows them: running on the device, or started) keep what they hold, whatever
 * it is; the others follow by creationTimestamp, then namespace/name, each
 * weighed against everything admitted before it. The same pods give the same
 * answer whichever of them is reconciled first, so the rejection is
 * level-triggered and deterministic.
 *
 * A node allocatable of 0 or absent (not reported yet) is not checked.
 *
 * @module
 */
import type { V1Container, V1Pod } from "@kubernetes/client-node";
import { parseQuantity } from "./quantity.ts";

/** The prefix of a rejected pod's status message (the kubelet's rejectPod). */
export const REJECTED_PREFIX = "Pod was rejected: ";
/** Reason of a pod whose host ports another pod of the node holds. */
export const REASON_NODE_PORTS = "NodePorts";
/** The NodePorts predicate's message (scheduler's nodeports.ErrReason, as the kubelet words it). */
export const MESSAGE_NODE_PORTS =
  "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports";

/** Why a pod is not admitted. */
export interface Rejection {
  /** Status reason (and the Warning Event's reason). */
  reason: string;
  /** The predicate's message (the Event's); the status message is REJECTED_PREFIX + this. */
  message: string;
}

/** What {@link admission} weighs. */
export interface AdmissionOptions {
  /**
   * True for a pod the node already admitted (it holds its ports and
   * resources and is never rejected).
   */
  admitted: (pod: V1Pod) => boolean;
  /** The Node's status.allocatable (cpu, memory, pods). */
  allocatable?: Record<string, string>;
}

/** One host port as the scheduler keys it (HostPortInfo: ip, protocol, port). */
interface HostPort {
  ip: string;
  protocol: string;
  port: number;
}

/** Requests of one pod: cpu in millicores, memory in bytes (rounded up, as Quantity does). */
interface Requests {
  cpu: number;
  memory: number;
}

const ANY_IP = "0.0.0.0";

/**
 * The host ports of `pod` (containers, and restartable init containers, which
 * run as long as the pod), with an empty hostIP as 0.0.0.0 and protocol TCP.
 */
export function hostPorts(pod: V1Pod): HostPort[] {
  const sidecars = (pod.spec?.initContainers ?? []).filter((c) => c.restartPolicy === "Always");
  return [...sidecars, ...(pod.spec?.containers ?? [])].flatMap((c) =>
    (c.ports ?? []).filter((p) => (p.hostPort ?? 0) > 0).map((p) => ({
      ip: p.hostIP || ANY_IP,
      protocol: p.protocol || "TCP",
      port: p.hostPort!,
    }))
  );
}

/** True when `want` clashes with a port in `used` (HostPortInfo.CheckConflict). */
function conflicts(used: HostPort[], want: HostPort): boolean {
  return used.some((u) =>
    u.port === want.port && u.protocol === want.protocol &&
    (want.ip === ANY_IP || u.ip === ANY_IP || u.ip === want.ip)
  );
}

function quantity(q: string | undefined, scale: number): number {
  if (q === undefined) return 0;
  try {
    return Math.ceil(parseQuantity(q) * scale);
  } catch {
    return 0;
  }
}

function containerRequests(c: V1Container): Requests {
  const r = c.resources?.requests;
  return { cpu: quantity(r?.cpu, 1000), memory: quantity(r?.memory, 1) };
}

const add = (a: Requests, b: Requests): Requests => ({
  cpu: a.cpu + b.cpu,
  memory: a.memory + b.memory,
});
const max = (a: Requests, b: Requests): Requests => ({
  cpu: Math.max(a.cpu, b.cpu),
  memory: Math.max(a.memory, b.memory),
});

/**
 * The cpu and memory `pod` requests, as the scheduler and the kubelet count
 * them (resourcehelper.PodRequests): pod-level requests when set; otherwise
 * the containers' sum, at least each init container's (with the restartable
 * init containers started before it), plus the pod overhead.
 */
export function podRequests(pod: V1Pod): Requests {
  const spec = pod.spec;
  let sum: Requests = { cpu: 0, memory: 0 };
  for (const c of spec?.containers ?? []) sum = add(sum, containerRequests(c));
  let sidecars: Requests = { cpu: 0, memory: 0 };
  let init: Requests = { cpu: 0, memory: 0 };
  for (const c of spec?.initContainers ?? []) {
    const r = containerRequests(c);
    if (c.restartPolicy === "Always") {
      sum = add(sum, r);
      sidecars = add(sidecars, r);
      init = max(init, sidecars);
    } else {
      init = max(init, add(r, sidecars));
    }
  }
  sum = max(sum, init);
  const podLevel = spec?.resources?.requests;
  if (podLevel?.cpu !== undefined) sum.cpu = quantity(podLevel.cpu, 1000);
  if (podLevel?.memory !== undefined) sum.memory = quantity(podLevel.memory, 1);
  return add(sum, {
    cpu: quantity(spec?.overhead?.cpu, 1000),
    memory: quantity(spec?.overhead?.memory, 1),
  });
}

const insufficient = (resource: string, requested: number, used: number, capacity: number) => ({
  reason: `OutOf${resource}`,
  message:
    `Node didn't have enough resource: ${resource}, requested: ${requested}, used: ${used}, capacity: ${capacity}`,
});

/** Admission order: creationTimestamp, then namespace/name. */
function byCreation(a: V1Pod, b: V1Pod): number {
  const t = (p: V1Pod) => {
    const c = p.metadata?.creationTimestamp;
    const ms = c ? new Date(c as unknown as string).getTime() : NaN;
    return Number.isNaN(ms) ? 0 : ms;
  };
  const key = (p: V1Pod) => `${p.metadata?.namespace}/${p.metadata?.name}/${p.metadata?.uid}`;
  return t(a) - t(b) || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0);
}

/**
 * Decides admission for the live pods of one node (the caller leaves out pods
 * in a terminal phase, pods refused for other reasons, and deleted pods that
 * were never admitted). Returns the rejected pods by uid.
 */
export function admission(pods: V1Pod[], opts: AdmissionOptions): Map<string, Rejection> {
  const alloc = opts.allocatable ?? {};
  const maxPods = quantity(alloc.pods, 1);
  const maxCpu = quantity(alloc.cpu, 1000);
  const maxMemory = quantity(alloc.memory, 1);
  const ports: HostPort[] = [];
  let count = 0;
  let used: Requests = { cpu: 0, memory: 0 };
  const take = (pod: V1Pod, req: Requests) => {
    count++;
    used = add(used, req);
    ports.push(...hostPorts(pod));
  };
  const admitted = pods.filter((p) => opts.admitted(p)).sort(byCreation);
  const pending = pods.filter((p) => !opts.admitted(p)).sort(byCreation);
  for (const p of admitted) take(p, podRequests(p));
  const rejected = new Map<string, Rejection>();
  for (const p of pending) {
    const req = podRequests(p);
    let r: Rejection | undefined;
    if (maxPods > 0 && count + 1 > maxPods) {
      r = insufficient("pods", 1, count, maxPods);
    } else if (maxCpu > 0 && req.cpu > 0 && req.cpu > maxCpu - used.cpu) {
      r = insufficient("cpu", req.cpu, used.cpu, maxCpu);
    } else if (maxMemory > 0 && req.memory > 0 && req.memory > maxMemory - used.memory) {
      r = insufficient("memory", req.memory, used.memory, maxMemory);
    } else if (hostPorts(p).some((want) => conflicts(ports, want))) {
      r = { reason: REASON_NODE_PORTS, message: MESSAGE_NODE_PORTS };
    }
    if (r) rejected.set(p.metadata?.uid ?? "", r);
    else take(p, req);
  }
  return rejected;
}
