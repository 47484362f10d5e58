/**
 * Samples aranya's /metrics every `intervalMs` (default 500 ms) while it runs:
 * the peak of process_resident_memory_bytes and the latest sample of
 * everything. When aranya does not export RSS or CPU, `ps` on its pid stands in.
 */
import { aborted } from "@aranya/common/lifecycle";
import { parsePrometheus, type PromSample, sumOf } from "./prom.ts";

/** What one sample says about the process. */
export interface ProcessFigures {
  rssBytes: number | undefined;
  cpuSeconds: number | undefined;
  /** Where the figures came from. */
  source: "metrics" | "ps";
}

/** `ps` figures of a process: RSS and cumulative CPU time. */
export async function psFigures(pid: number): Promise<ProcessFigures> {
  const out = await new Deno.Command("ps", {
    args: ["-o", "rss=,times=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).output();
  const [rss, times] = new TextDecoder().decode(out.stdout).trim().split(/\s+/);
  const kb = Number(rss);
  const s = Number(times);
  return {
    rssBytes: Number.isFinite(kb) && rss ? kb * 1024 : undefined,
    cpuSeconds: Number.isFinite(s) && times ? s : undefined,
    source: "ps",
  };
}

/** Options for {@link MetricsSampler}. */
export interface MetricsSamplerOptions {
  /** e.g. "http://127.0.0.1:8080/metrics". */
  url: string;
  /** aranya's pid, for the `ps` fallback. */
  pid: number;
  intervalMs?: number;
}

/** See the module doc. */
export class MetricsSampler {
  readonly #o: MetricsSamplerOptions;
  /** Highest RSS seen, bytes. */
  peakRssBytes = 0;
  /** Highest V8 heap in use seen (process_heap_used_bytes), bytes. */
  peakHeapBytes = 0;
  /** Where the RSS figures came from ("metrics" unless aranya lacks the metric). */
  rssSource: "metrics" | "ps" = "metrics";
  /** The latest parsed /metrics. */
  last: PromSample[] = [];
  samples = 0;
  failures = 0;

  constructor(opts: MetricsSamplerOptions) {
    this.#o = opts;
  }

  /** Samples until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const stop = aborted(signal);
    while (!signal.aborted) {
      await this.sample().catch(() => this.failures++);
      await Promise.race([stop, new Promise((r) => setTimeout(r, this.#o.intervalMs ?? 500))]);
    }
  }

  /** Takes one sample now; returns the parsed metrics. */
  async sample(): Promise<PromSample[]> {
    const r = await fetch(this.#o.url);
    if (r.status !== 200) {
      await r.body?.cancel();
      throw new Error(`GET ${this.#o.url} answered ${r.status}`);
    }
    this.last = parsePrometheus(await r.text());
    this.samples++;
    const p = await this.process(this.last);
    if (p.rssBytes !== undefined) this.peakRssBytes = Math.max(this.peakRssBytes, p.rssBytes);
    const heap = sumOf(this.last, "process_heap_used_bytes");
    if (heap !== undefined) this.peakHeapBytes = Math.max(this.peakHeapBytes, heap);
    if (p.source === "ps") this.rssSource = "ps";
    return this.last;
  }

  /** RSS and CPU from `samples` (or `ps` when a metric is missing). */
  async process(samples: PromSample[] = this.last): Promise<ProcessFigures> {
    const rssBytes = sumOf(samples, "process_resident_memory_bytes");
    const cpuSeconds = sumOf(samples, "process_cpu_seconds_total");
    if (rssBytes !== undefined && cpuSeconds !== undefined) {
      return { rssBytes, cpuSeconds, source: "metrics" };
    }
    const ps = await psFigures(this.#o.pid);
    return {
      rssBytes: rssBytes ?? ps.rssBytes,
      cpuSeconds: cpuSeconds ?? ps.cpuSeconds,
      source: "ps",
    };
  }
}
