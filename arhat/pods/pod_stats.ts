/**
 * One reading of the CPU and memory use of every running container of the
 * pods arhat runs, grouped by pod, for the kubelet API's pod stats
 * (`StatsMsg.pods`).
 *
 * The pods and their containers come from the pod manager's list (pod uid,
 * namespace and name from the desired pod or the containers' labels; the
 * newest instance of each container); the figures from the runtime's
 * {@link ContainerRuntime.stats}. Only running containers are read, and only
 * pods with at least one are returned. The infra container is not a
 * Kubernetes container and is left out, as the kubelet leaves out the sandbox.
 */
import { errorMessage, isKind } from "@aranya/common/errors";
import { ContainerStatus_State } from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerRuntime, ContainerStats } from "../runtime/runtime.ts";
import type { PodManager } from "./pod_manager.ts";

/** One container's reading. */
export interface ContainerStatsReading {
  /** The Kubernetes container name. */
  name: string;
  /** The engine's container id (one instance; a restart is a new id). */
  id: string;
  /** When this instance started, unix ms (0 when unknown). */
  startTimeMs: number;
  stats: ContainerStats;
}

/** One pod's reading. */
export interface PodStatsReading {
  uid: string;
  namespace: string;
  name: string;
  /** When the pod's infra container started, unix ms (0 when unknown). */
  startTimeMs: number;
  containers: ContainerStatsReading[];
}

/** Options for {@link readPodStats}. */
export interface ReadPodStatsOptions {
  /** Where the pods come from (the pod manager's `list`). */
  pods: Pick<PodManager, "list">;
  runtime: Pick<ContainerRuntime, "stats">;
}

/** What {@link readPodStats} found, and what it could not read. */
export interface PodStatsResult {
  pods: PodStatsReading[];
  /** One message per container whose stats could not be read (other than one that just stopped). */
  problems: string[];
}

/**
 * Reads every running container's stats, in parallel. A container that
 * stopped or vanished between the list and the read is silently skipped; any
 * other failure skips the container and is named in `problems`. Rejects only
 * when the pod list itself cannot be read.
 */
export async function readPodStats(opts: ReadPodStatsOptions): Promise<PodStatsResult> {
  const statuses = await opts.pods.list();
  const problems: string[] = [];
  const pods = await Promise.all(statuses.map(async (p): Promise<PodStatsReading> => {
    const running = p.containers.filter((c) =>
      c.state === ContainerStatus_State.RUNNING && c.containerId !== ""
    );
    const containers = await Promise.all(running.map(async (c) => {
      try {
        const stats = await opts.runtime.stats(c.containerId);
        return { name: c.name, id: c.containerId, startTimeMs: unixMs(c.startedAt), stats };
      } catch (err) {
        if (!isKind(err, "not-found") && !isKind(err, "invalid-input")) {
          problems.push(
            `Container "${c.name}" of pod "${p.namespace}/${p.name}": ${errorMessage(err)}`,
          );
        }
        return undefined;
      }
    }));
    return {
      uid: p.uid,
      namespace: p.namespace,
      name: p.name,
      startTimeMs: unixMs(p.startedAt),
      containers: containers.filter((c) => c !== undefined),
    };
  }));
  return { pods: pods.filter((p) => p.containers.length > 0), problems };
}

/** RFC 3339 to unix ms; 0 for empty or unparsable. */
function unixMs(rfc3339: string): number {
  const ms = rfc3339 ? Date.parse(rfc3339) : NaN;
  return Number.isNaN(ms) ? 0 : ms;
}
