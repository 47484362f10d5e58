/**
 * aranya, the operator: `aranya --config /etc/aranya/config.yaml [flags]`.
 *
 * Wires the parts together, top to bottom in `serve`: the controllers and the
 * kubelet API; who may dial in and the listeners (connectivity/link_servers.ts);
 * the device directory (virtualnode/device_directory.ts: what happens when a
 * device connects, changes or goes away); then everything runs. Every replica
 * does the same (active-active, docs/scale.md):
 *
 * 1. the ops HTTP server (/healthz, /readyz, /metrics) and the membership
 *    (replicas/membership.ts: one Lease per live replica, one watch);
 * 2. the EdgeDevice controller (one EdgeDevice watch, one edge Node watch)
 *    reconciling this replica's share of the EdgeDevices, and the pod
 *    controller (one pod watch) for the devices whose links it holds;
 * 3. then the device listeners open (websocket, grpc, and the one MQTT broker
 *    connection), so no device is served before the caches are warm;
 * 4. a device's link may land on any replica: the replica takes the device's
 *    node Lease (replicas/node_lease.ts; it waits while another live replica
 *    holds it), then runs its DeviceSession (node status with this replica's
 *    kubelet address and port, Lease, EdgeDevice status, virtual pod) and
 *    attaches it to the pod controller; MQTT devices, whose link is the
 *    broker, are served by the replica whose share they are;
 * 5. the kubelet API (aranya/kubelet/) serves every Node whose device this
 *    replica holds, each on its own port, once the serving certificate is
 *    there.
 *
 * A replica that cannot renew its membership closes all its links (its
 * devices dial again and land on another replica) before the others may take
 * them over. Pods keep running on the devices through any handover. Every
 * API request goes through one client-side rate limiter.
 */
import { errorMessage } from "@aranya/common/errors";
import { createLogger, type Logger } from "@aranya/common/log";
import { processEnv } from "@aranya/common/env_expand";
import { type AranyaConfig, loadAranyaConfig, USAGE } from "./config.ts";
import { MemoryLinkRegistry } from "./connectivity/link_registry.ts";
import { SecretAuthenticator } from "./connectivity/secret_authenticator.ts";
import { createLinkServers } from "./connectivity/link_servers.ts";
import { EdgeDeviceController } from "./edgedevice/controller.ts";
import { deviceTimers } from "./edgedevice/device_timers.ts";
import { type KubeClients, loadKubeConfig, makeKubeClients } from "./kube/client.ts";
import { ApiEventRecorder, refOf } from "./kube/event_recorder.ts";
import { TokenBucket } from "./kube/rate_limiter.ts";
import { OpsHttpServer, type Readiness } from "./metrics/ops_http_server.ts";
import { createMetrics } from "./metrics/aranya_metrics.ts";
import { LeaseMembership, type Membership, StaticMembership } from "./replicas/membership.ts";
import { PodController } from "./virtualnode/pod_controller.ts";
import { DeviceDirectory } from "./virtualnode/device_directory.ts";
import { KubeAuthenticator, loadClientCa } from "./kubelet/authenticator.ts";
import { SubjectAccessReviewAuthorizer } from "./kubelet/authorizer.ts";
import { KubeletServer } from "./kubelet/kubelet_server.ts";
import { deviceStatsSource } from "./kubelet/device_stats.ts";
import { createServingCertificate } from "./kubelet/serving_cert.ts";

/** Longest one attempt of an API request may take once sent (see `runAranya`). */
const REQUEST_TIMEOUT_MS = 30_000;

/** aranya's version. */
export const ARANYA_VERSION = "0.1.0";

/** Runs aranya with `config` until `signal` aborts. */
export async function runAranya(
  config: AranyaConfig,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  const metrics = createMetrics();
  const kc = loadKubeConfig({ kubeconfig: config.kubeconfig, env: processEnv });
  const clients = makeKubeClients(kc, {
    limiter: new TokenBucket({ qps: config.api.qps, burst: config.api.burst }),
    metrics,
    timeoutMs: REQUEST_TIMEOUT_MS,
  });
  // One attempt of a request that has not answered 30 s after it was sent is given up (a
  // connection that went silent must not hold a worker or a device's heartbeats for good); the
  // caller retries as after any failure. The API server answers well before: API Priority and
  // Fairness refuses a request it cannot seat within 15 s with a 429.
  const m = config.membership;
  const membership: Membership = m.enabled
    ? new LeaseMembership({
      http: clients.http,
      // Renewals go ahead of other waiting requests (a burst of work never delays them past
      // the renew deadline).
      coordination: clients.heartbeats,
      namespace: m.namespace,
      name: m.name,
      identity: m.identity,
      leaseDurationMs: m.leaseDurationMs,
      renewDeadlineMs: m.renewDeadlineMs,
      retryPeriodMs: m.retryPeriodMs,
      log,
    })
    : new StaticMembership(m.identity);
  membership.onChange(() => metrics.members.set(membership.members().length));
  let serving = false;
  const readiness = (): Readiness => {
    if (!membership.healthy) {
      return { ready: false, reason: "not a member: its membership Lease is not renewed" };
    }
    if (serving) return { ready: true };
    return { ready: false, reason: "starting the controllers and device listeners" };
  };
  const ops = new OpsHttpServer({
    hostname: config.http.listen.hostname,
    port: config.http.listen.port,
    metrics,
    readiness,
    log,
  });
  const running = [ops.run(signal), membership.run(signal)];
  await ops.ready;
  log.info("aranya started", {
    version: ARANYA_VERSION,
    http: `${config.http.listen.hostname}:${ops.port}`,
    identity: m.identity,
    membership: m.enabled,
  });
  await Promise.race([membership.ready, Promise.all(running)]);
  metrics.members.set(membership.members().length);
  running.push(serve(config, clients, metrics, membership, signal, log, () => serving = true));
  await Promise.all(running);
}

/** Everything a replica serves; resolves when `signal` aborts and all stopped. */
async function serve(
  config: AranyaConfig,
  clients: KubeClients,
  metrics: ReturnType<typeof createMetrics>,
  membership: Membership,
  signal: AbortSignal,
  log: Logger,
  onServing: () => void,
): Promise<void> {
  const { core, custom, coordination } = clients;
  // Reads that callers cause (device credentials, kubelet API callers' TokenReview and
  // SubjectAccessReview) spend a budget of their own: a flood of bad credentials never delays
  // aranya's own requests, the Lease renewals first of all.
  const authClients = makeKubeClients(clients.access, {
    limiter: new TokenBucket({
      qps: config.api.auth.qps,
      burst: config.api.auth.burst,
      maxWaitMs: 2_000,
    }),
    metrics,
  });
  const events = new ApiEventRecorder({ core, host: membership.identity, log });

  // 1. What the API says: EdgeDevices and their Nodes (this replica reconciles its share), the
  //    pods on the devices, and the kubelet API for the Nodes whose devices are served here.
  const edgeDevices = new EdgeDeviceController({
    http: clients.http,
    core,
    custom,
    coordination,
    namespaces: config.namespaces,
    events,
    owns: (key) => membership.owns(key),
    onReconcile: (result) => metrics.reconcileTotal.inc({ controller: "edgedevice", result }),
    log,
  });
  const pods = new PodController({
    http: clients.http,
    core,
    directory: edgeDevices,
    owns: (key) => membership.owns(key),
    namespaces: config.namespaces,
    kubeletAddress: config.kubelet.address,
    syncIntervalMs: config.pods.syncIntervalMs,
    onSync: (result) => {
      metrics.podSyncsTotal.inc({ result });
      metrics.reconcileTotal.inc({
        controller: "pod",
        result: result === "ok" ? "success" : result,
      });
    },
    recordEvent: (pod, type, reason, message) => {
      events.record(refOf(pod), type, reason, message);
    },
    log,
  });
  const certificate = createServingCertificate(config.kubelet.tls, {
    clients,
    kubeletAddress: config.kubelet.address,
    nodeName: "aranya",
    log,
  });
  const kubelet = new KubeletServer({
    hostname: config.kubelet.listen,
    firstPort: config.kubelet.port,
    portCount: config.kubelet.portCount,
    certificate,
    clientCa: config.kubelet.clientCaFile
      ? await Deno.readTextFile(config.kubelet.clientCaFile)
      : await loadClientCa(core),
    authenticator: new KubeAuthenticator({ authentication: authClients.authentication }),
    authorizer: new SubjectAccessReviewAuthorizer({ authorization: authClients.authorization }),
    backend: pods,
    stats: deviceStatsSource,
    timeouts: {
      creationMs: config.kubelet.streamCreationTimeoutMs,
      idleMs: config.kubelet.streamIdleTimeoutMs,
    },
    onRequest: (route, code) => metrics.kubeletRequestsTotal.inc({ route, code: String(code) }),
    log,
  });

  // 2. Who may dial in, and the listeners they dial.
  const registry = new MemoryLinkRegistry();
  // A device is known only while its EdgeDevice exists AND owns the Node of its name: a device
  // whose name is taken by another namespace's Node (or a real node) cannot dial in at all.
  const authenticator = new SecretAuthenticator({
    core: authClients.core,
    devices: (key) => edgeDevices.ownedDevice(key),
    // Provisioned and dialing at once: its Node may trail in this replica's cache. Or this
    // replica's caches trail the API (a watch restarting after the API server refused it under
    // load).
    pending: (key) => {
      if (!edgeDevices.caughtUp) return true;
      const ed = edgeDevices.device(key);
      return ed !== undefined && !ed.metadata?.deletionTimestamp &&
        edgeDevices.node(ed.metadata!.name!) === undefined;
    },
    log,
  });
  const links = await createLinkServers(config.links, {
    authenticator,
    registry,
    keepaliveFor: (device) => deviceTimers(edgeDevices.device(device)).keepaliveMs,
    log,
  });

  // 3. What happens per device: connect, change, go away (subscribes to the controller's hooks).
  const directory = new DeviceDirectory({
    kubeletAddress: config.kubelet.address,
    node: config.node,
    clients,
    events,
    registry,
    authenticator,
    mqtt: links.mqtt,
    membership,
    devices: edgeDevices,
    pods,
    kubelet,
    metrics,
    log,
  });

  // 4. Run: the certificate, then the kubelet API (devices and pods are served meanwhile); the
  //    controllers; once their caches are warm, the listeners.
  const certRun = certificate.run(signal).catch((err) =>
    log.error("kubelet serving certificate failed", { error: errorMessage(err) })
  );
  const kubeletRun = certificate.ready.then(
    () => kubelet.run(signal),
    (err) =>
      log.error("the kubelet API is not served: no serving certificate", {
        error: errorMessage(err),
      }),
  );
  const directoryRun = directory.run(signal);
  const controllers = [edgeDevices.run(signal), pods.run(signal)];
  await Promise.race([Promise.all([edgeDevices.ready, pods.ready]), Promise.all(controllers)]);
  const listeners = links.servers.map((s) => s.run(signal, (link) => directory.onLink(link)));
  await Promise.race([Promise.all(links.servers.map((s) => s.ready)), Promise.all(listeners)]);
  if (!signal.aborted) {
    onServing();
    log.info("serving devices", {
      websocket: links.websocket?.port,
      watches: edgeDevices.watches + pods.watches + (membership instanceof LeaseMembership ? 1 : 0),
      members: membership.members(),
    });
  }
  await Promise.all([...controllers, ...listeners]);
  await Promise.allSettled([directoryRun, kubeletRun, certRun]);
}

if (import.meta.main) {
  let config: AranyaConfig;
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(USAGE);
    Deno.exit(0);
  }
  try {
    config = await loadAranyaConfig(Deno.args);
  } catch (err) {
    console.error(`aranya: ${errorMessage(err)}`);
    Deno.exit(2);
  }
  const log = createLogger({ level: config.logLevel }).with({ component: "aranya" });
  const ac = new AbortController();
  const stop = () => {
    if (!ac.signal.aborted) log.info("stopping");
    ac.abort();
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  try {
    await runAranya(config, ac.signal, log);
  } catch (err) {
    log.error("aranya failed", { error: errorMessage(err) });
    Deno.exit(1);
  }
  Deno.exit(0);
}
