/**
 * The Prometheus text exposition format, read back: enough to take sums of
 * counters and gauges from aranya's /metrics and the API server's /metrics.
 */

/** One sample line. */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses exposition text; comment lines and lines that do not parse are skipped. */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL)) {
      labels[l[1]!] = l[2]!.replace(/\\n/g, "\n").replace(/\\(["\\])/g, "$1");
    }
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

/**
 * Sum of every series called `name` whose labels pass `filter`; undefined when
 * there is no such series (the metric is missing, which is not the same as 0).
 */
export function sumOf(
  samples: readonly PromSample[],
  name: string,
  filter: (labels: Record<string, string>) => boolean = () => true,
): number | undefined {
  let sum: number | undefined;
  for (const s of samples) {
    if (s.name === name && filter(s.labels)) sum = (sum ?? 0) + s.value;
  }
  return sum;
}

/** Sums of the series called `name` grouped by the value of label `by`. */
export function sumBy(
  samples: readonly PromSample[],
  name: string,
  by: string,
  filter: (labels: Record<string, string>) => boolean = () => true,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples) {
    if (s.name !== name || !filter(s.labels)) continue;
    const k = s.labels[by] ?? "";
    out[k] = (out[k] ?? 0) + s.value;
  }
  return out;
}
