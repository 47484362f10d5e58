/**
 * One reading of the host's CPU, memory and disk use, for the kubelet API's
 * node stats (`StatsMsg.node`).
 *
 * Sources, all through the {@link SystemProbe} (so `/proc` is read through
 * `cat` when Deno refuses it, see `system_probe.ts`; no permission beyond the
 * node status's is needed):
 * - CPU: the `cpu` line of `/proc/stat`, cumulative jiffies of every state
 *   but idle and iowait (guest time is already part of user and nice), at
 *   USER_HZ 100 (10 ms a jiffy: the value every Linux architecture exports);
 *   `btime` there is the boot time, the node's start time.
 * - Memory: `/proc/meminfo`. Usage is MemTotal - MemFree, working set
 *   MemTotal - MemAvailable (memory the kernel cannot simply reclaim),
 *   available MemAvailable, rss AnonPages. Without `/proc/meminfo`,
 *   `Deno.systemMemoryInfo()` gives working set and available (usage then
 *   equals the working set and rss is unknown).
 * - File system: the one holding the state dir, via statfs (df as fallback);
 *   used is capacity - available.
 *
 * Anything that cannot be read is left out of the result (and named in
 * `problems`); collection itself never fails.
 */
import { errorMessage } from "@aranya/common/errors";
import { createSystemProbe, type SystemProbe } from "./system_probe.ts";

/** Nanoseconds per jiffy at USER_HZ 100. */
const NS_PER_JIFFY = 10_000_000;

/** Cumulative CPU time of the host, from `/proc/stat`. */
export interface ProcStat {
  /** Busy time over all CPUs (every state but idle and iowait), nanoseconds. */
  busyNanoseconds: number;
  /** Boot time, unix milliseconds; undefined without a `btime` line. */
  bootTimeMs?: number;
}

/** Parses `/proc/stat`; undefined when it has no aggregate `cpu` line. */
export function parseProcStat(text: string): ProcStat | undefined {
  const cpu = /^cpu\s+([\d\s]+)$/m.exec(text);
  if (!cpu) return undefined;
  const f = cpu[1]!.trim().split(/\s+/).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice]
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  const busy = user + nice + system + irq + softirq + steal;
  const btime = /^btime\s+(\d+)\s*$/m.exec(text);
  return {
    busyNanoseconds: busy * NS_PER_JIFFY,
    bootTimeMs: btime ? Number(btime[1]) * 1000 : undefined,
  };
}

/** Fields of `/proc/meminfo`, in bytes. */
export type Meminfo = Record<string, number>;

/** Parses `/proc/meminfo` (`Name: value kB` lines) into bytes per name. */
export function parseMeminfo(text: string): Meminfo {
  const out: Meminfo = {};
  for (const m of text.matchAll(/^([\w()]+):\s+(\d+)(?:\s+(kB))?\s*$/gm)) {
    out[m[1]!] = Number(m[2]) * (m[3] ? 1024 : 1);
  }
  return out;
}

/** The node's memory in the terms of the stats: usage, working set, available, rss. */
export interface NodeMemory {
  usageBytes: number;
  workingSetBytes: number;
  availableBytes: number;
  rssBytes?: number;
}

/** Memory figures from parsed `/proc/meminfo`; undefined without MemTotal and MemAvailable. */
export function memoryFromMeminfo(m: Meminfo): NodeMemory | undefined {
  const total = m.MemTotal;
  const available = m.MemAvailable;
  if (total === undefined || available === undefined) return undefined;
  const free = m.MemFree ?? available;
  return {
    usageBytes: Math.max(0, total - free),
    workingSetBytes: Math.max(0, total - available),
    availableBytes: available,
    rssBytes: m.AnonPages,
  };
}

/** One reading of the host; absent parts could not be measured. */
export interface NodeStatsReading {
  /** When the reading was taken, unix milliseconds. */
  timeMs: number;
  bootTimeMs?: number;
  /** Cumulative busy CPU time, nanoseconds. */
  cpuUsageCoreNanoseconds?: number;
  memory?: NodeMemory;
  fs?: { capacityBytes: number; availableBytes: number; usedBytes: number };
  /** Why parts are missing, one message each. */
  problems: string[];
}

/** Options for {@link readNodeStats}. */
export interface ReadNodeStatsOptions {
  /** The file system holding this dir is the node's (arhat's state dir). */
  stateDir: string;
  /** Host access (default {@link createSystemProbe}()). */
  probe?: SystemProbe;
  /** Clock, unix ms (default Date.now). */
  now?: () => number;
}

/** Measures the host once; never rejects. See the module doc. */
export async function readNodeStats(opts: ReadNodeStatsOptions): Promise<NodeStatsReading> {
  const probe = opts.probe ?? createSystemProbe();
  const problems: string[] = [];
  const attempt = async <T>(fn: () => Promise<T | undefined>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      problems.push(errorMessage(err));
      return undefined;
    }
  };
  const timeMs = (opts.now ?? Date.now)();
  const [stat, memory, disk] = await Promise.all([
    attempt(async () => {
      const text = await probe.readFile("/proc/stat");
      const stat = text === undefined ? undefined : parseProcStat(text);
      if (!stat) problems.push(`"/proc/stat" is missing or has no "cpu" line`);
      return stat;
    }),
    attempt(async () => {
      // /proc/meminfo unreadable: Deno.systemMemoryInfo() below says enough (or why not).
      const text = await probe.readFile("/proc/meminfo").catch(() => undefined);
      const fromProc = text === undefined ? undefined : memoryFromMeminfo(parseMeminfo(text));
      if (fromProc) return fromProc;
      const m = probe.memory();
      const workingSet = Math.max(0, m.total - m.available);
      return { usageBytes: workingSet, workingSetBytes: workingSet, availableBytes: m.available };
    }),
    attempt(() => probe.diskUsage(opts.stateDir)),
  ]);
  return {
    timeMs,
    bootTimeMs: stat?.bootTimeMs,
    cpuUsageCoreNanoseconds: stat?.busyNanoseconds,
    memory,
    fs: disk && {
      capacityBytes: disk.total,
      availableBytes: disk.available,
      usedBytes: Math.max(0, disk.total - disk.available),
    },
    problems,
  };
}
