/**
 * arhat, the agent on an edge device: `arhat -c /etc/arhat/config.yaml`.
 *
 * Wires the parts together: the container runtime (Docker Engine API, dockerd
 * or Podman), the pod manager with its journal (pods keep running and come
 * back after a restart or reboot without a link), the dispatch table, and the
 * reconnect loop over the configured transports. Pod status changes go to
 * aranya at once when connected, and are queued on disk and flushed on
 * reconnect when not; node status changes are pushed while connected
 * (node/node_status_reporter.ts).
 */
import { parseArgs } from "node:util";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { MsgKind } from "@aranya/common/envelope";
import { errorMessage } from "@aranya/common/errors";
import { createLogger, type Logger } from "@aranya/common/log";
import { SessionServer } from "@aranya/common/session/session_server";
import { PodEnsureCmdSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { Agent } from "./agent/agent.ts";
import { hostManagement } from "./agent/handle_host.ts";
import { imageHandlers } from "./agent/handle_image.ts";
import { nodeHandlers } from "./agent/handle_node.ts";
import { encodePodStatus, podHandlers } from "./agent/handle_pod.ts";
import { createStatsSource, statsHandlers } from "./agent/handle_stats.ts";
import { streamHandlers } from "./agent/handle_stream.ts";
import { type ArhatConfig, DEFAULT_CONFIG_PATH, loadArhatConfig } from "./config.ts";
import { Connector } from "./connectivity/connector.ts";
import { dialerFor } from "./connectivity/dialers.ts";
import { collectNodeStatus, encodeNodeStatus } from "./node/node_info.ts";
import { NodeStatusReporter } from "./node/node_status_reporter.ts";
import { PodManager } from "./pods/pod_manager.ts";
import { DockerRuntime } from "./runtime/docker/docker_runtime.ts";
import { PodJournal } from "./state/journal.ts";
import { StatusQueue } from "./state/status_queue.ts";

/** arhat's version, reported to aranya. */
export const ARHAT_VERSION = "0.1.0";

/** Runs arhat with `config` until `signal` aborts. */
export async function runArhat(
  config: ArhatConfig,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  const device = `${config.device.namespace}/${config.device.name}`;
  log = log.with({ device });
  const runtime = new DockerRuntime({ socket: config.runtime.endpoint, log });
  const journal = await PodJournal.open({ stateDir: config.stateDir, log });
  const queue = await StatusQueue.open({ stateDir: config.stateDir, log });
  /** The session over the live link; undefined while offline. */
  let session: SessionServer | undefined;
  const enqueue = (uid: string, bytes: Uint8Array) =>
    queue.enqueue(uid, bytes).catch((err) =>
      log.error("queueing a pod status failed", { uid, error: errorMessage(err) })
    );
  const publish = (uid: string, bytes: Uint8Array) => {
    if (session) session.publish(MsgKind.MSG_POD_STATUS, bytes).catch(() => enqueue(uid, bytes));
    else enqueue(uid, bytes);
  };

  const pods = new PodManager({
    runtime,
    stateDir: config.stateDir,
    infraImage: config.runtime.infraImage,
    infraCommand: config.runtime.infraCommand,
    podNetwork: config.runtime.podNetwork,
    store: {
      save: (uid, cmd) => journal.put(uid, toBinary(PodEnsureCmdSchema, cmd)),
      remove: async (uid) => {
        await journal.delete(uid);
      },
    },
    onStatus: (s) => publish(s.uid, encodePodStatus(s)),
    log,
  });
  const journaled = journal.list().map((p) => fromBinary(PodEnsureCmdSchema, p.bytes));
  pods.adopt(journaled);
  if (journaled.length) log.info("restoring journaled pods", { count: journaled.length });

  let runtimeVersion: { name: string; version: string } | undefined;
  const collectNode = async (kind: "all" | "dynamic") => {
    let runtimeError: string | undefined;
    try {
      runtimeVersion ??= await runtime.version();
    } catch (err) {
      runtimeError = errorMessage(err);
    }
    return await collectNodeStatus({
      agentVersion: ARHAT_VERSION,
      stateDir: config.stateDir,
      runtime: runtimeVersion,
      runtimeError,
      thresholds: config.nodeStatus,
      maxPods: config.nodeStatus.maxPods,
      kind,
      log,
    });
  };
  // Node status changes are pushed (MSG_NODE_STATUS); aranya's own requests set the baseline.
  const reporter = new NodeStatusReporter({
    collect: () => collectNode("dynamic"),
    publish: (bytes) => session?.publish(MsgKind.MSG_NODE_STATUS, bytes),
    checkIntervalMs: config.nodeStatus.checkIntervalMs,
    maxIntervalMs: config.nodeStatus.maxIntervalMs,
    log,
  });
  const nodeStatus = async (kind: "all" | "dynamic") => {
    const msg = await collectNode(kind);
    reporter.observe(msg);
    return encodeNodeStatus(msg);
  };

  const agent = new Agent()
    .register(nodeHandlers(nodeStatus))
    .register(podHandlers(pods))
    .register(imageHandlers(runtime))
    .register(statsHandlers(createStatsSource({ runtime, pods, stateDir: config.stateDir, log })))
    .register(streamHandlers({
      runtime,
      pods,
      host: hostManagement({ ...config.host, logDir: config.host.logDir ?? "/var/log" }),
    }));

  const connector = new Connector({
    methods: config.connectivity.methods.map((m) => ({
      dialer: dialerFor(device, m, log),
      priority: m.priority,
      backoff: m.backoff,
    })),
    onLink: (l) => {
      const s = new SessionServer(l, { dispatcher: agent, log });
      s.start();
      session = s;
      l.closed.then(() => {
        if (session === s) session = undefined;
      });
      queue.drain((bytes) => s.publish(MsgKind.MSG_POD_STATUS, bytes)).then(
        (n) => n && log.info("flushed queued pod statuses", { count: n }),
        (err) => log.warn("flushing queued pod statuses failed", { error: errorMessage(err) }),
      );
    },
    log,
  });

  log.info("arhat starting", {
    version: ARHAT_VERSION,
    runtime: config.runtime.endpoint,
    transports: config.connectivity.methods.map((m) => m.method),
  });
  await Promise.all([pods.run(signal), connector.run(signal), reporter.run(signal)]);
  runtime.close();
  log.info("arhat stopped");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { config: { type: "string", short: "c", default: DEFAULT_CONFIG_PATH } },
    strict: true,
  });
  const boot = createLogger({ fields: { component: "arhat" } });
  let config: ArhatConfig;
  try {
    config = await loadArhatConfig(values.config!);
  } catch (err) {
    boot.error("invalid configuration", { error: errorMessage(err) });
    Deno.exit(2);
  }
  const log = createLogger({ level: config.log.level, fields: { component: "arhat" } });
  const ac = new AbortController();
  const stop = () => ac.abort();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    await runArhat(config, ac.signal, log);
  } catch (err) {
    log.error("arhat failed", { error: errorMessage(err) });
    Deno.exit(1);
  }
  Deno.exit(0);
}
