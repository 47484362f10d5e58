/**
 * aranya's Prometheus metrics (npm `prom-client`), in a registry of their own
 * (never prom-client's global one), so tests and replicas in one process do
 * not share counters.
 *
 * Process metrics: prom-client's `collectDefaultMetrics` reads /proc, which
 * Deno allows only with --allow-all; without it the figures come out as 0
 * (RSS) or not at all. So this module does NOT use it and collects
 * `process_resident_memory_bytes` from `Deno.memoryUsage().rss` and
 * `process_cpu_seconds_total` (with its user and system parts) from
 * node:process `cpuUsage()`, neither of which needs a permission.
 *
 * @module
 */
import process from "node:process";
import { Counter, Gauge, Registry } from "prom-client";

/** The metrics aranya's parts update. */
export interface AranyaMetrics {
  readonly registry: Registry;
  /** Devices with a live link on this replica. */
  readonly devicesConnected: Gauge;
  /** EdgeDevice objects known to the controller. */
  readonly edgeDevices: Gauge;
  /** Reconciles by controller and result ("success", "error", "requeue", …). */
  readonly reconcileTotal: Counter<"controller" | "result">;
  /** Pod syncs to devices by result. */
  readonly podSyncsTotal: Counter<"result">;
  /** 1 while this replica leads, else 0. */
  readonly members: Gauge;
  /** API requests by verb (get, list, watch, create, update, patch, delete, deletecollection). */
  readonly apiRequestsTotal: Counter<"verb">;
  /** API requests that write (create, update, patch, delete, deletecollection). */
  readonly apiWritesTotal: Counter;
  /** Time API requests spent waiting for the client-side rate limit. */
  readonly apiRateLimitWaitSecondsTotal: Counter;
  /** Kubelet API requests by route and HTTP status (101 for streams that started). */
  readonly kubeletRequestsTotal: Counter<"route" | "code">;
  /**
   * Messages on device links at the session layer, all devices together, by
   * transport, direction ("sent" to devices, "received" from them) and kind
   * (e.g. CMD_NODE_INFO_GET, MSG_POD_STATUS; stream data per frame). Transport
   * keepalives are not counted: an idle device adds nothing here.
   */
  readonly linkMessagesTotal: Counter<"transport" | "direction" | "kind">;
  /** The Prometheus text exposition of every metric. */
  text(): Promise<string>;
  /** The Content-Type of {@link text}. */
  readonly contentType: string;
}

/** Options of {@link createMetrics}. */
export interface CreateMetricsOptions {
  /** Add the process metrics (RSS, CPU seconds, start time); default true. */
  processMetrics?: boolean;
}

/** A fresh registry with aranya's metrics; see the module doc. */
export function createMetrics(opts: CreateMetricsOptions = {}): AranyaMetrics {
  const registry = new Registry();
  const registers = [registry];
  if (opts.processMetrics ?? true) addProcessMetrics(registry);
  return {
    registry,
    devicesConnected: new Gauge({
      name: "aranya_devices_connected",
      help: "Devices with a live link to this replica.",
      registers,
    }),
    edgeDevices: new Gauge({
      name: "aranya_edgedevices",
      help: "EdgeDevice objects known to this replica.",
      registers,
    }),
    reconcileTotal: new Counter({
      name: "aranya_reconcile_total",
      help: "Reconciles by controller and result.",
      labelNames: ["controller", "result"] as const,
      registers,
    }),
    podSyncsTotal: new Counter({
      name: "aranya_pod_syncs_total",
      help: "Pod syncs to devices by result.",
      labelNames: ["result"] as const,
      registers,
    }),
    members: new Gauge({
      name: "aranya_replica_members",
      help: "Live aranya replicas as this one sees them (itself included while it is a member).",
      registers,
    }),
    apiRequestsTotal: new Counter({
      name: "aranya_api_requests_total",
      help: "Kubernetes API requests by verb.",
      labelNames: ["verb"] as const,
      registers,
    }),
    apiWritesTotal: new Counter({
      name: "aranya_api_writes_total",
      help: "Kubernetes API requests that write (create, update, patch, delete).",
      registers,
    }),
    apiRateLimitWaitSecondsTotal: new Counter({
      name: "aranya_api_rate_limit_wait_seconds_total",
      help: "Seconds Kubernetes API requests waited for the client-side rate limit.",
      registers,
    }),
    kubeletRequestsTotal: new Counter({
      name: "aranya_kubelet_requests_total",
      help: "Kubelet API requests by route and HTTP status (101: a stream started).",
      labelNames: ["route", "code"] as const,
      registers,
    }),
    linkMessagesTotal: new Counter({
      name: "aranya_link_messages_total",
      help:
        "Messages on device links (session layer; keepalives not counted) by transport, direction and kind.",
      labelNames: ["transport", "direction", "kind"] as const,
      registers,
    }),
    text: () => registry.metrics(),
    contentType: registry.contentType,
  };
}

/** Process metrics without /proc; see the module doc. */
function addProcessMetrics(registry: Registry): void {
  const registers = [registry];
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers,
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  new Gauge({
    name: "process_heap_used_bytes",
    help: "JavaScript heap in use, in bytes.",
    registers,
    collect() {
      this.set(Deno.memoryUsage().heapUsed);
    },
  });
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since unix epoch in seconds.",
    registers,
  }).set(Math.round(performance.timeOrigin / 1000));
  // Counters only go up: each scrape adds what was used since the last one. The first of the
  // three (in registration, so exposition, order) collects for all of them.
  let last = { user: 0, system: 0 };
  new Counter({
    name: "process_cpu_user_seconds_total",
    help: "Total user CPU time spent in seconds.",
    registers,
    collect() {
      const now = process.cpuUsage(); // microseconds
      const du = Math.max(0, now.user - last.user) / 1e6;
      const ds = Math.max(0, now.system - last.system) / 1e6;
      last = now;
      this.inc(du);
      system.inc(ds);
      total.inc(du + ds);
    },
  });
  const system = new Counter({
    name: "process_cpu_system_seconds_total",
    help: "Total system CPU time spent in seconds.",
    registers,
  });
  const total = new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    registers,
  });
}
