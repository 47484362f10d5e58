/**
 * Node memory of bench:stream, from /proc (through procps `ps` and `cat`:
 * Deno wants --allow-all to read /proc/<pid> itself), as the sum over a set of
 * processes of RSS (VmRSS) and of PSS (`Pss` of /proc/<pid>/smaps_rollup:
 * pages shared between the processes counted once in total, not once per
 * process).
 *
 * - kubelet side: every process in the worker's PID namespace (its init is
 *   containerd) and every process below those: containerd, the kubelet
 *   (nsenter puts it in there), every containerd-shim-runc-v2, and below the
 *   shims, in each pod's own PID namespace, its pause process and its
 *   container processes. Left out: the `unshare` and `nsenter` wrappers outside the
 *   namespace that the harness starts them with (a real install has none).
 * - aranya side: arhat (the `deno run -P=arhat arhat/main.ts` process the e2e
 *   World starts, from source) and its children, the Podman API service
 *   (`podman system service`, arhat's engine) and its children, and for every
 *   engine container of the measured pods (infra and app) its conmon and
 *   every process below it (the container's processes).
 * - aranya itself (one process serving every device) is reported apart: it is
 *   not part of any one node.
 */
import { run } from "@aranya/e2e/process";

/** One process. */
export interface ProcInfo {
  pid: number;
  ppid: number;
  /** The inode of its PID namespace. */
  pidns: string;
  rssKiB: number;
  args: string;
}

/** What a set of processes uses. */
export interface MemoryFigure {
  processes: number;
  rssMiB: number;
  /** null when no process's smaps_rollup could be read. */
  pssMiB: number | null;
  /** Process count by program name (the first word of argv, basename). */
  kinds: Record<string, number>;
}

/** Every process on the machine. */
export async function procTable(): Promise<ProcInfo[]> {
  const out = await run("ps", ["-ww", "-eo", "pid=,ppid=,pidns=,rss=,args="]);
  return out.split("\n").flatMap((line) => {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(.*)$/.exec(line);
    return m
      ? [{ pid: Number(m[1]), ppid: Number(m[2]), pidns: m[3]!, rssKiB: Number(m[4]), args: m[5]! }]
      : [];
  });
}

/** `roots` and every process below them. */
export function withDescendants(all: readonly ProcInfo[], roots: Iterable<number>): Set<number> {
  const children = new Map<number, number[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p.pid]);
  const out = new Set<number>();
  const queue = [...roots];
  while (queue.length) {
    const pid = queue.pop()!;
    if (out.has(pid) || !all.some((p) => p.pid === pid)) continue;
    out.add(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** PSS of each pid in KiB (missing when its smaps_rollup was unreadable, e.g. it exited). */
async function pssKiB(pids: readonly number[]): Promise<Map<number, number>> {
  const script = 'for p in "$@"; do v=$(grep -m1 "^Pss:" /proc/$p/smaps_rollup 2>/dev/null); ' +
    'echo "$p $v"; done';
  const out = await run("sh", ["-c", script, "sh", ...pids.map(String)]);
  const m = new Map<number, number>();
  for (const line of out.split("\n")) {
    const r = /^(\d+) Pss:\s+(\d+) kB/.exec(line);
    if (r) m.set(Number(r[1]), Number(r[2]));
  }
  return m;
}

/**
 * Sums the memory of `pids` of `all`. A process whose smaps_rollup cannot be
 * read any more has exited since `ps` ran and is left out of both sums; when
 * no process's could be read (no smaps_rollup), PSS is null and RSS covers all.
 */
export async function memoryOf(
  all: readonly ProcInfo[],
  pids: ReadonlySet<number>,
): Promise<MemoryFigure> {
  let procs = all.filter((p) => pids.has(p.pid));
  const pss = await pssKiB(procs.map((p) => p.pid));
  if (pss.size > 0) procs = procs.filter((p) => pss.has(p.pid));
  const kinds: Record<string, number> = {};
  for (const p of procs) {
    const k = p.args.split(" ")[0]!.replace(/^.*\//, "");
    kinds[k] = (kinds[k] ?? 0) + 1;
  }
  const rss = procs.reduce((s, p) => s + p.rssKiB, 0);
  const pssSum = procs.reduce((s, p) => s + (pss.get(p.pid) ?? 0), 0);
  return {
    processes: procs.length,
    rssMiB: Math.round(rss / 102.4) / 10,
    pssMiB: pss.size > 0 ? Math.round(pssSum / 102.4) / 10 : null,
    kinds,
  };
}

/**
 * The kubelet side: every process in the PID namespace of the worker's
 * containerd, and below them (the pods' own PID namespaces).
 */
export async function kubeletSideMemory(containerdPid: number): Promise<MemoryFigure> {
  const all = await procTable();
  const init = all.find((p) => p.pid === containerdPid);
  if (!init) throw new Error(`The worker's containerd (pid ${containerdPid}) is gone`);
  if (!/^\d+$/.test(init.pidns)) {
    throw new Error(`ps shows no PID namespace for containerd (pid ${containerdPid})`);
  }
  // Each pod sandbox has a PID namespace of its own below the worker's: its processes are
  // children of the shims.
  const members = all.filter((p) => p.pidns === init.pidns).map((p) => p.pid);
  return await memoryOf(all, withDescendants(all, members));
}

/**
 * The aranya side: arhat (`arhatPid`) and below it, the Podman service
 * listening on `podmanSocket` and below it, and the conmon of each of
 * `containerIds` (full ids) and below it.
 */
export async function aranyaSideMemory(
  arhatPid: number,
  podmanSocket: string,
  containerIds: readonly string[],
): Promise<MemoryFigure> {
  const all = await procTable();
  if (!all.some((p) => p.pid === arhatPid)) throw new Error(`arhat (pid ${arhatPid}) is gone`);
  const service = all.filter((p) =>
    /(^|\/)podman\s/.test(p.args) && p.args.includes(" system service") &&
    p.args.includes(podmanSocket)
  );
  if (service.length === 0) {
    throw new Error(`No "podman system service" process on ${podmanSocket}`);
  }
  const conmons = all.filter((p) =>
    /(^|\/)conmon\s/.test(p.args) && containerIds.some((id) => p.args.includes(id))
  );
  const withConmon = new Set(
    containerIds.filter((id) => conmons.some((c) => c.args.includes(id))),
  );
  if (withConmon.size < containerIds.length) {
    throw new Error(
      `No conmon process for ${containerIds.length - withConmon.size} of ${containerIds.length} ` +
        "containers of the measured pods",
    );
  }
  const pids = withDescendants(all, [
    arhatPid,
    ...service.map((p) => p.pid),
    ...conmons.map((p) => p.pid),
  ]);
  return await memoryOf(all, pids);
}

/** RSS and PSS of one process and its children (aranya). */
export async function processMemory(pid: number): Promise<MemoryFigure> {
  const all = await procTable();
  if (!all.some((p) => p.pid === pid)) throw new Error(`Process ${pid} is gone`);
  return await memoryOf(all, withDescendants(all, [pid]));
}
