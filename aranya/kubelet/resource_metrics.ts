/**
 * A device's StatsMsg as the kubelet's `GET /metrics/resource`: the
 * Prometheus text format (0.0.4) with the families, help texts, label order,
 * number format and timestamps of the kubelet's resource metrics collector
 * (`pkg/kubelet/metrics/collectors/resource_metrics.go`, Kubernetes 1.34),
 * which metrics-server scrapes.
 *
 * The text is written by hand: prom-client's registry holds this process's
 * own metrics (aranya_*), while these are per-scrape values of another
 * machine, with explicit timestamps, which prom-client does not emit.
 *
 * As the kubelet's registry does, the output has families sorted by name,
 * samples sorted by label values, labels sorted by name, no family without
 * samples, values in Go's shortest `%g` form (1.6625664e+07) and timestamps
 * in unix milliseconds (none on `container_start_time_seconds`). Swap
 * families are left out (the device does not report swap);
 * `resource_scrape_error` is always 0, since a failed device request never
 * reaches this function. The deprecated `scrape_error` family is hidden by a
 * 1.34 kubelet and not written.
 */
import type { StatsMsg } from "@aranya/proto/gen/aranya/stats_pb";
import { podUsage } from "./stats_summary.ts";

/** The Content-Type of the body, as the kubelet sends it. */
export const RESOURCE_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

interface Family {
  help: string;
  type: "counter" | "gauge";
  samples: Sample[];
}

interface Sample {
  /** Label pairs, sorted by name. */
  labels: [string, string][];
  value: number;
  timestampMs?: number;
}

/** Help texts with the stability prefix, exactly as the kubelet writes them. */
const FAMILIES = {
  container_cpu_usage_seconds_total: {
    help: "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    type: "counter",
  },
  container_memory_working_set_bytes: {
    help: "[STABLE] Current working set of the container in bytes",
    type: "gauge",
  },
  container_start_time_seconds: {
    help: "[STABLE] Start time of the container since unix epoch in seconds",
    type: "gauge",
  },
  node_cpu_usage_seconds_total: {
    help: "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    type: "counter",
  },
  node_memory_working_set_bytes: {
    help: "[STABLE] Current working set of the node in bytes",
    type: "gauge",
  },
  pod_cpu_usage_seconds_total: {
    help: "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    type: "counter",
  },
  pod_memory_working_set_bytes: {
    help: "[STABLE] Current working set of the pod in bytes",
    type: "gauge",
  },
  resource_scrape_error: {
    help: "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    type: "gauge",
  },
} as const;

type FamilyName = keyof typeof FAMILIES;

/** The body of `GET /metrics/resource` for the device's `msg`. Pure. */
export function toResourceMetrics(msg: StatsMsg): string {
  const families = new Map<FamilyName, Family>(
    (Object.keys(FAMILIES) as FamilyName[]).map((
      name,
    ) => [name, { ...FAMILIES[name], samples: [] }]),
  );
  const add = (name: FamilyName, s: Sample) => families.get(name)!.samples.push(s);

  const node = msg.node;
  if (node?.cpu) {
    add("node_cpu_usage_seconds_total", {
      labels: [],
      value: Number(node.cpu.usageCoreNanoseconds) / 1e9,
      timestampMs: Number(node.cpu.timeUnixMs),
    });
  }
  if (node?.memory) {
    add("node_memory_working_set_bytes", {
      labels: [],
      value: Number(node.memory.workingSetBytes),
      timestampMs: Number(node.memory.timeUnixMs),
    });
  }
  for (const pod of msg.pods) {
    const podLabels: [string, string][] = [["namespace", pod.namespace], ["pod", pod.name]];
    for (const c of pod.containers) {
      const labels: [string, string][] = [["container", c.name], ...podLabels];
      if (c.startTimeUnixMs > 0n) {
        // float64(StartTime.UnixNano()) / 1e9, as the kubelet computes it.
        add("container_start_time_seconds", {
          labels,
          value: Number(c.startTimeUnixMs * 1_000_000n) / 1e9,
        });
      }
      if (c.cpu) {
        add("container_cpu_usage_seconds_total", {
          labels,
          value: Number(c.cpu.usageCoreNanoseconds) / 1e9,
          timestampMs: Number(c.cpu.timeUnixMs),
        });
      }
      if (c.memory) {
        add("container_memory_working_set_bytes", {
          labels,
          value: Number(c.memory.workingSetBytes),
          timestampMs: Number(c.memory.timeUnixMs),
        });
      }
    }
    const usage = podUsage(pod);
    if (usage.cpu) {
      add("pod_cpu_usage_seconds_total", {
        labels: podLabels,
        value: usage.cpu.usageCoreNanoseconds / 1e9,
        timestampMs: usage.cpu.timeMs,
      });
    }
    if (usage.memory) {
      add("pod_memory_working_set_bytes", {
        labels: podLabels,
        value: usage.memory.workingSetBytes,
        timestampMs: usage.memory.timeMs,
      });
    }
  }
  add("resource_scrape_error", { labels: [], value: 0 });

  let out = "";
  for (const name of [...families.keys()].sort()) {
    const f = families.get(name)!;
    const samples = uniqueSorted(f.samples);
    if (samples.length === 0) continue;
    out += `# HELP ${name} ${escapeHelp(f.help)}\n# TYPE ${name} ${f.type}\n`;
    for (const s of samples) {
      const labels = s.labels.length
        ? `{${s.labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`
        : "";
      const ts = s.timestampMs === undefined ? "" : ` ${Math.trunc(s.timestampMs)}`;
      out += `${name}${labels} ${formatGoFloat(s.value)}${ts}\n`;
    }
  }
  return out;
}

/**
 * Samples sorted by label values (in label-name order), as the Prometheus Go
 * client sorts them; of samples with equal labels only the first is kept
 * (the Go client would fail the whole scrape on such a duplicate).
 */
function uniqueSorted(samples: Sample[]): Sample[] {
  const seen = new Set<string>();
  const unique = samples.filter((s) => {
    const key = JSON.stringify(s.labels);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return unique.sort((a, b) => {
    if (a.labels.length !== b.labels.length) return a.labels.length - b.labels.length;
    for (let i = 0; i < a.labels.length; i++) {
      const va = a.labels[i]![1];
      const vb = b.labels[i]![1];
      if (va !== vb) return va < vb ? -1 : 1;
    }
    return 0;
  });
}

/**
 * A number as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (what
 * the Prometheus text format uses): the shortest digits that round-trip,
 * in exponent form (two-digit exponent at least) when the exponent is below
 * -4 or at least 6.
 */
export function formatGoFloat(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  if (v === 0) return "0";
  const [mantissa, expText] = v.toExponential().split("e") as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 6) {
    const abs = String(Math.abs(exp)).padStart(2, "0");
    return `${mantissa}e${exp < 0 ? "-" : "+"}${abs}`;
  }
  // JavaScript writes plain decimals for 1e-7 <= |v| < 1e21, which covers this range.
  return String(v);
}

/** Escapes a label value: backslash, double quote and newline. */
function escapeLabelValue(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** Escapes a help text: backslash and newline. */
function escapeHelp(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}
