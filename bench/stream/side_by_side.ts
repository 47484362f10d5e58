/**
 * bench:stream's figures of the aranya node beside those of its kubelet peer:
 * the flat `summary` of the closing JSON line (ratios = aranya-side figure /
 * kubelet figure) and the lines printed for people. Pure; no I/O.
 */
import type { MemoryFigure } from "./node_memory.ts";
import { type Latency, ratio, round, show, showRatio } from "./stats.ts";

/** What was measured on one node. */
export interface SideFigures {
  exec: { websocket?: Latency; spdy?: Latency };
  /** Median MB/s of the port-forward downloads. */
  portForward: { websocket?: number | null; spdy?: number | null };
  /** create -> Running seen by a watch, ms. */
  podStart?: Latency;
  /** Node memory with 1 pod and with `pods` pods. */
  memory: { one?: MemoryFigure; many?: MemoryFigure };
}

/** Both nodes, and what is shared. */
export interface PeerFigures {
  aranya: SideFigures;
  kubelet: SideFigures;
  /** Pods per side in the pod start bench (and in the "many" memory figure). */
  pods: number;
  /** aranya's own process (shared by every device), with `pods` pods. */
  aranyaProcess?: MemoryFigure;
}

/** The summary keys that must be there for a complete run (`pods` names the memory one). */
export function requiredKeys(pods: number): string[] {
  return [
    "exec_p50_ratio_ws",
    "exec_p50_ratio_spdy",
    "exec_p99_ratio_spdy",
    "portforward_ratio_ws",
    "portforward_ratio_spdy",
    "pod_start_p99_ratio",
    `node_mem_ratio_${pods}_pods`,
  ];
}

/** The memory figure a ratio is taken of: PSS when both sides have it, else RSS. */
function memRatio(a?: MemoryFigure, k?: MemoryFigure): number | null {
  if (!a || !k) return null;
  return a.pssMiB !== null && k.pssMiB !== null
    ? ratio(a.pssMiB, k.pssMiB)
    : ratio(a.rssMiB, k.rssMiB);
}

function rssRatio(a?: MemoryFigure, k?: MemoryFigure): number | null {
  return a && k ? ratio(a.rssMiB, k.rssMiB) : null;
}

function sideRaw(s: SideFigures, pods: number): Record<string, number | null | undefined> {
  return {
    exec_ws_p50_ms: s.exec.websocket?.p50Ms,
    exec_ws_p99_ms: s.exec.websocket?.p99Ms,
    exec_spdy_p50_ms: s.exec.spdy?.p50Ms,
    exec_spdy_p99_ms: s.exec.spdy?.p99Ms,
    portforward_ws_mb_s: s.portForward.websocket,
    portforward_spdy_mb_s: s.portForward.spdy,
    pod_start_p50_ms: s.podStart?.p50Ms,
    pod_start_p99_ms: s.podStart?.p99Ms,
    node_mem_pss_mib_1_pod: s.memory.one?.pssMiB,
    node_mem_rss_mib_1_pod: s.memory.one?.rssMiB,
    [`node_mem_pss_mib_${pods}_pods`]: s.memory.many?.pssMiB,
    [`node_mem_rss_mib_${pods}_pods`]: s.memory.many?.rssMiB,
  };
}

/**
 * The flat summary: the ratios (aranya / kubelet; for MB/s below 1 is slower,
 * for the others below 1 is better), then the raw figures of each side
 * (`aranya_...`, `kubelet_...`) and aranya's own process. Missing figures are
 * left out (so {@link requiredKeys} tells what could not be measured).
 */
export function peerSummary(f: PeerFigures): Record<string, number> {
  const a = f.aranya, k = f.kubelet, n = f.pods;
  const r = (x: number | null | undefined, y: number | null | undefined) =>
    round(ratio(x ?? null, y ?? null));
  const out: Record<string, number | null | undefined> = {
    exec_p50_ratio_ws: r(a.exec.websocket?.p50Ms, k.exec.websocket?.p50Ms),
    exec_p50_ratio_spdy: r(a.exec.spdy?.p50Ms, k.exec.spdy?.p50Ms),
    exec_p99_ratio_ws: r(a.exec.websocket?.p99Ms, k.exec.websocket?.p99Ms),
    exec_p99_ratio_spdy: r(a.exec.spdy?.p99Ms, k.exec.spdy?.p99Ms),
    portforward_ratio_ws: r(a.portForward.websocket, k.portForward.websocket),
    portforward_ratio_spdy: r(a.portForward.spdy, k.portForward.spdy),
    pod_start_p50_ratio: r(a.podStart?.p50Ms, k.podStart?.p50Ms),
    pod_start_p99_ratio: r(a.podStart?.p99Ms, k.podStart?.p99Ms),
    node_mem_ratio_1_pod: round(memRatio(a.memory.one, k.memory.one)),
    [`node_mem_ratio_${n}_pods`]: round(memRatio(a.memory.many, k.memory.many)),
    node_mem_rss_ratio_1_pod: round(rssRatio(a.memory.one, k.memory.one)),
    [`node_mem_rss_ratio_${n}_pods`]: round(rssRatio(a.memory.many, k.memory.many)),
    pod_starts_per_side: n,
  };
  for (const [side, s] of [["aranya", a], ["kubelet", k]] as const) {
    for (const [key, v] of Object.entries(sideRaw(s, n))) out[`${side}_${key}`] = v;
  }
  out.aranya_process_pss_mib = f.aranyaProcess?.pssMiB;
  out.aranya_process_rss_mib = f.aranyaProcess?.rssMiB;
  const flat: Record<string, number> = {};
  for (const [key, v] of Object.entries(out)) {
    if (typeof v === "number" && Number.isFinite(v)) flat[key] = v;
  }
  return flat;
}

function mem(m?: MemoryFigure): string {
  if (!m) return "n/a";
  const kinds = Object.entries(m.kinds).sort((x, y) => y[1] - x[1])
    .map(([k, c]) => `${k}x${c}`).join(" ");
  return `PSS ${show(m.pssMiB, " MiB")}, RSS ${
    show(m.rssMiB, " MiB")
  } (${m.processes} processes: ${kinds})`;
}

/** One line per figure: the aranya node's, its kubelet peer's, and the ratio. */
export function peerLines(f: PeerFigures): string[] {
  const s = peerSummary(f);
  const a = f.aranya, k = f.kubelet, n = f.pods;
  const ms = (x?: number | null) => show(x ?? null, " ms");
  const lines: string[] = [];
  for (const [mode, key] of [["websocket", "ws"], ["spdy", "spdy"]] as const) {
    lines.push(
      `exec round trip (${mode}), aranya node vs kubelet node: p50 ${ms(a.exec[mode]?.p50Ms)} vs ${
        ms(k.exec[mode]?.p50Ms)
      } (${showRatio(s[`exec_p50_ratio_${key}`] ?? null)}), p99 ${ms(a.exec[mode]?.p99Ms)} vs ${
        ms(k.exec[mode]?.p99Ms)
      } (${showRatio(s[`exec_p99_ratio_${key}`] ?? null)})`,
    );
  }
  for (const [mode, key] of [["websocket", "ws"], ["spdy", "spdy"]] as const) {
    lines.push(
      `port-forward download (${mode}), aranya node vs kubelet node: ${
        show(a.portForward[mode] ?? null, " MB/s")
      } vs ${show(k.portForward[mode] ?? null, " MB/s")} (${
        showRatio(s[`portforward_ratio_${key}`] ?? null)
      }; below x1 is slower)`,
    );
  }
  lines.push(
    `pod start (API create -> Running seen by a watch, ${n} pods per side), aranya node vs kubelet node: p50 ${
      ms(a.podStart?.p50Ms)
    } vs ${ms(k.podStart?.p50Ms)} (${showRatio(s.pod_start_p50_ratio ?? null)}), p99 ${
      ms(a.podStart?.p99Ms)
    } vs ${ms(k.podStart?.p99Ms)} (${showRatio(s.pod_start_p99_ratio ?? null)})`,
  );
  for (
    const [label, which, key] of [["1 pod", "one", "1_pod"], [
      `${n} pods`,
      "many",
      `${n}_pods`,
    ]] as const
  ) {
    lines.push(
      `node memory with ${label}: aranya side (arhat + Podman service + conmon + containers) ${
        mem(a.memory[which])
      }`,
      `node memory with ${label}: kubelet side (kubelet + containerd + shims + pause + containers) ${
        mem(k.memory[which])
      }`,
      `node memory with ${label}: ratio ${showRatio(s[`node_mem_ratio_${key}`] ?? null)} (PSS), ${
        showRatio(s[`node_mem_rss_ratio_${key}`] ?? null)
      } (RSS)`,
    );
  }
  lines.push(
    `aranya's own process (shared by every device, not in the ratios), with ${n} pods on its device: ${
      mem(f.aranyaProcess)
    }`,
  );
  return lines;
}
