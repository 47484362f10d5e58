/**
 * Stats commands: CMD_STATS_GET -> MSG_STATS, the device's and its pods'
 * resource usage for the kubelet API's /stats/summary and /metrics/resource.
 *
 * {@link createStatsSource} measures the host (`node/node_stats.ts`) and the
 * running containers of every pod (`pods/pod_stats.ts`) on each request and
 * adds `usageNanoCores`, the average CPU use since the previous request
 * (absent on the first one), from the readings it keeps per node and per
 * container instance.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { type Logger, nullLogger } from "@aranya/common/log";
import {
  type CpuStatsSchema,
  StatsGetCmdSchema,
  StatsMsgSchema,
} from "@aranya/proto/gen/aranya/stats_pb";
import { CpuRateTracker } from "../node/cpu_rate.ts";
import { readNodeStats } from "../node/node_stats.ts";
import type { SystemProbe } from "../node/system_probe.ts";
import { readPodStats } from "../pods/pod_stats.ts";
import type { PodManager } from "../pods/pod_manager.ts";
import type { ContainerRuntime } from "../runtime/runtime.ts";
import type { Handler } from "./agent.ts";
import { decodePayload } from "./decode.ts";

/** Produces the encoded StatsMsg (the MSG_STATS payload). */
export type StatsSource = () => Promise<Uint8Array>;

/** The stats handlers. */
export function statsHandlers(source: StatsSource): [CmdKind, Handler][] {
  return [[CmdKind.CMD_STATS_GET, {
    unary: async ({ payload }) => {
      decodePayload(StatsGetCmdSchema, payload); // no options yet; a malformed one is still refused
      return { kind: MsgKind.MSG_STATS, payload: await source() };
    },
  }]];
}

/** Options for {@link createStatsSource}. */
export interface StatsSourceOptions {
  runtime: Pick<ContainerRuntime, "stats">;
  pods: Pick<PodManager, "list">;
  /** arhat's state dir: its file system is the node's. */
  stateDir: string;
  /** Host access (default: the real host, see `node/system_probe.ts`). */
  probe?: SystemProbe;
  /** Clock of the node reading, unix ms (default Date.now). */
  now?: () => number;
  /** Where parts that could not be measured are reported (debug). */
  log?: Logger;
}

/**
 * A {@link StatsSource} over the real host and runtime. Contract: every call
 * takes a fresh reading; unmeasurable node parts are left out of the message
 * and containers that cannot be read are skipped (both logged at debug);
 * it rejects only when the pod list cannot be read.
 */
export function createStatsSource(opts: StatsSourceOptions): StatsSource {
  const rates = new CpuRateTracker();
  const log = opts.log ?? nullLogger;
  return async () => {
    const [node, pods] = await Promise.all([
      readNodeStats({ stateDir: opts.stateDir, probe: opts.probe, now: opts.now }),
      readPodStats({ pods: opts.pods, runtime: opts.runtime }),
    ]);
    const problems = [...node.problems, ...pods.problems];
    if (problems.length) log.debug("some stats could not be read", { problems });

    const cpu = (
      key: string,
      timeMs: number,
      cumulativeNs: number,
    ): MessageInitShape<typeof CpuStatsSchema> => {
      const nanoCores = rates.rate(key, timeMs, cumulativeNs);
      return {
        timeUnixMs: u64(timeMs),
        usageCoreNanoseconds: u64(cumulativeNs),
        usageNanoCores: nanoCores === undefined ? undefined : u64(nanoCores),
      };
    };
    const t = u64(node.timeMs);
    const msg = create(StatsMsgSchema, {
      node: {
        startTimeUnixMs: u64(node.bootTimeMs ?? 0),
        cpu: node.cpuUsageCoreNanoseconds === undefined
          ? undefined
          : cpu("node", node.timeMs, node.cpuUsageCoreNanoseconds),
        memory: node.memory && {
          timeUnixMs: t,
          usageBytes: u64(node.memory.usageBytes),
          workingSetBytes: u64(node.memory.workingSetBytes),
          availableBytes: u64(node.memory.availableBytes),
          rssBytes: node.memory.rssBytes === undefined ? undefined : u64(node.memory.rssBytes),
        },
        fs: node.fs && {
          timeUnixMs: t,
          capacityBytes: u64(node.fs.capacityBytes),
          availableBytes: u64(node.fs.availableBytes),
          usedBytes: u64(node.fs.usedBytes),
        },
      },
      pods: pods.pods.map((p) => ({
        podUid: p.uid,
        namespace: p.namespace,
        name: p.name,
        startTimeUnixMs: u64(p.startTimeMs),
        containers: p.containers.map((c) => ({
          name: c.name,
          startTimeUnixMs: u64(c.startTimeMs),
          cpu: cpu(`container/${c.id}`, c.stats.timeMs, c.stats.cpuUsageCoreNanoseconds),
          memory: {
            timeUnixMs: u64(c.stats.timeMs),
            usageBytes: u64(c.stats.memoryUsageBytes),
            workingSetBytes: u64(c.stats.memoryWorkingSetBytes),
            rssBytes: c.stats.memoryRssBytes === undefined
              ? undefined
              : u64(c.stats.memoryRssBytes),
          },
        })),
      })),
    });
    rates.forgetExcept([
      "node",
      ...pods.pods.flatMap((p) => p.containers.map((c) => `container/${c.id}`)),
    ]);
    return toBinary(StatsMsgSchema, msg);
  };
}

/** A non-negative number as a (u)int64 field (rounded; negatives are 0). */
function u64(n: number): bigint {
  return BigInt(Math.max(0, Math.round(n)));
}
