/**
 * aranya, the operator: `aranya --config /etc/aranya/config.yaml [flags]`.
 *
 * Wires the parts together. Every replica does the same (active-active,
 * docs/scale.md):
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
import type { Link, LinkServer } from "@aranya/common/link";
import { processEnv } from "@aranya/common/env_expand";
import { type AranyaConfig, loadAranyaConfig, type ServerTlsFiles, USAGE } from "./config.ts";
import { MemoryLinkRegistry } from "./connectivity/link_registry.ts";
import { SecretAuthenticator } from "./connectivity/secret_authenticator.ts";
import { WebSocketLinkServer } from "./connectivity/websocket/ws_link_server.ts";
import { GrpcLinkServer } from "./connectivity/grpc/grpc_link_server.ts";
import { mqttLinkServerOptions } from "./connectivity/mqtt/mqtt_server_options.ts";
import { MqttLinkServer } from "./connectivity/mqtt/mqtt_link_server.ts";
import { EdgeDeviceController } from "./edgedevice/controller.ts";
import type { EdgeDevice } from "./edgedevice/types.ts";
import { deviceTimers, leaseSecondsFor } from "./edgedevice/device_timers.ts";
import { type KubeClients, loadKubeConfig, makeKubeClients } from "./kube/client.ts";
import { ApiEventRecorder, refOf } from "./kube/event_recorder.ts";
import { TokenBucket } from "./kube/rate_limiter.ts";
import { OpsHttpServer, type Readiness } from "./metrics/ops_http_server.ts";
import { createMetrics } from "./metrics/aranya_metrics.ts";
import {
  LeaseMembership,
  type Membership,
  ownerOf,
  StaticMembership,
} from "./replicas/membership.ts";
import { NodeLease } from "./replicas/node_lease.ts";
import { DeviceSession } from "./virtualnode/device_session.ts";
import { PodController } from "./virtualnode/pod_controller.ts";
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
  const kc = clients.access;
  // Reads that callers cause (device credentials, kubelet API callers' TokenReview and
  // SubjectAccessReview) spend a budget of their own: a flood of bad credentials never delays
  // aranya's own requests, the Lease renewals first of all.
  const authClients = makeKubeClients(kc, {
    limiter: new TokenBucket({
      qps: config.api.auth.qps,
      burst: config.api.auth.burst,
      maxWaitMs: 2_000,
    }),
    metrics,
  });
  const events = new ApiEventRecorder({ core, host: membership.identity, log });
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
  const links = config.links;
  const mqtt = links.mqtt
    ? new MqttLinkServer(
      await mqttLinkServerOptions(links.mqtt, { keys: authenticator, registry, log }),
    )
    : undefined;
  const certificate = createServingCertificate(config.kubelet.tls, {
    clients,
    kubeletAddress: config.kubelet.address,
    nodeName: "aranya",
    log,
  });
  const certRun = certificate.run(signal).catch((err) =>
    log.error("kubelet serving certificate failed", { error: errorMessage(err) })
  );
  const known = new Set<string>();
  /** MQTT devices are served by the replica whose share they are (their link is the broker). */
  const mqttShare = (ed: EdgeDevice) => {
    const key = `${ed.metadata?.namespace}/${ed.metadata?.name}`;
    const conn = ed.spec?.connectivity;
    if (conn?.method !== "mqtt" || !membership.owns(key)) {
      mqtt?.removeDevice(key);
      return;
    }
    const ns = conn.mqttConfig?.messageNamespace;
    if (!mqtt || !ns) {
      log.warn("EdgeDevice uses mqtt, but aranya has no MQTT broker configured (links.mqtt)", {
        device: key,
      });
      return;
    }
    mqtt.addDevice(key, ns).catch((err) =>
      log.warn("subscribing the device's MQTT topics failed", {
        device: key,
        error: errorMessage(err),
      })
    );
  };
  const onDevice = (ed: EdgeDevice) => {
    known.add(`${ed.metadata?.namespace}/${ed.metadata?.name}`);
    metrics.edgeDevices.set(known.size);
    // A changed tenancy rule re-checks the pods on the device's Node at once.
    pods.deviceChanged(ed);
    mqttShare(ed);
  };
  const onDeviceRemoved = (namespace: string, name: string) => {
    const key = `${namespace}/${name}`;
    known.delete(key);
    metrics.edgeDevices.set(known.size);
    mqtt?.removeDevice(key);
    // Tell the device: its link closes; it cannot dial back (its credentials are gone, and
    // forgotten here rather than served from the token cache).
    authenticator.forget(key);
    const why = `EdgeDevice "${key}" was deleted`;
    const session = sessions.get(key);
    if (session) session.remove(why);
    else registry.get(key)?.close(why);
    // The Node's port goes with the Node: not when a same-named EdgeDevice of another namespace,
    // which never owned it, is deleted.
    const owner = edgeDevices.ownerOf(name);
    if (!session && (!owner || owner.metadata?.namespace === namespace)) kubelet.release(name);
  };
  const edgeDevices: EdgeDeviceController = new EdgeDeviceController({
    http: clients.http,
    core,
    custom,
    coordination,
    namespaces: config.namespaces,
    events,
    owns: (key) => membership.owns(key),
    onDevice,
    onDeviceRemoved,
    // A Node recreated under a connected device gets the device's full node info again.
    onNodeCreated: (namespace, name) => sessions.get(`${namespace}/${name}`)?.resync(),
    // A Node turned Unknown by the node lifecycle controller (late heartbeats) while its device
    // is connected here is written Ready again at once, not at the next status sync.
    onNodeChanged: (namespace, name, node) => sessions.get(`${namespace}/${name}`)?.nodeSeen(node),
    // The token this replica just made: the device's first dial here needs no Secret read.
    onCredentials: (device, uid, token) => authenticator.prime(device, uid, token),
    onReconcile: (result) => metrics.reconcileTotal.inc({ controller: "edgedevice", result }),
    log,
  });
  // The share moved: reconcile the keys that are new to this replica; MQTT devices follow the
  // share. Not a member any more: close every link now, before the others may take the devices
  // (fencing).
  let membersBefore = membership.members();
  membership.onChange(() => {
    const before = membersBefore;
    membersBefore = membership.members();
    edgeDevices.resync((key) => ownerOf(key, before) !== membership.identity);
    for (const key of known) {
      const ed = edgeDevices.device(key);
      if (ed) mqttShare(ed);
    }
    if (!membership.healthy && !signal.aborted) {
      for (const s of sessions.values()) {
        registry.get(`${s.namespace}/${s.node}`)?.close(
          "This aranya replica lost its membership; dial again",
        );
      }
    }
  });
  const pods: PodController = new PodController({
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
  const kubelet: KubeletServer = new KubeletServer({
    hostname: config.kubelet.listen,
    firstPort: config.kubelet.port,
    portCount: config.kubelet.portCount,
    certificate,
    clientCa: config.kubelet.clientCaFile
      ? await Deno.readTextFile(config.kubelet.clientCaFile)
      : await loadClientCa(core),
    authenticator: new KubeAuthenticator({
      authentication: authClients.authentication,
    }),
    authorizer: new SubjectAccessReviewAuthorizer({
      authorization: authClients.authorization,
    }),
    backend: pods,
    stats: deviceStatsSource,
    timeouts: {
      creationMs: config.kubelet.streamCreationTimeoutMs,
      idleMs: config.kubelet.streamIdleTimeoutMs,
    },
    onRequest: (route, code) => metrics.kubeletRequestsTotal.inc({ route, code: String(code) }),
    log,
  });
  // The kubelet API waits for its certificate; devices and pods are served meanwhile.
  const kubeletRun = certificate.ready.then(
    () => kubelet.run(signal),
    (err) =>
      log.error("the kubelet API is not served: no serving certificate", {
        error: errorMessage(err),
      }),
  );
  const sessions = new Map<string, DeviceSession>();
  const running = new Set<Promise<void>>();
  // Ports of offline devices whose Node now names another replica (the device moved while this
  // one lived) or that are gone: freed once a minute.
  const sweep = setInterval(() => {
    for (const [node, port] of kubelet.ports) {
      const owner = edgeDevices.ownerOf(node);
      if (owner && sessions.has(`${owner.metadata?.namespace}/${node}`)) continue;
      const status = edgeDevices.node(node)?.status;
      const ours = status?.addresses?.some((a) => a.address === config.kubelet.address) &&
        status?.daemonEndpoints?.kubeletEndpoint?.Port === port;
      if (!ours) kubelet.release(node);
    }
  }, 60_000);
  signal.addEventListener("abort", () => clearInterval(sweep), { once: true });
  /** Serves `link` once this replica owns the device (its node Lease). */
  const serveLink = async (link: Link): Promise<void> => {
    const [namespace, node] = link.device.split("/") as [string, string];
    const lease = new NodeLease({
      coordination,
      heartbeats: clients.heartbeats,
      core,
      node,
      membership,
      cachedNodeUid: () => edgeDevices.node(node)?.metadata?.uid,
      log,
    });
    const stop = new AbortController();
    link.closed.then(() => stop.abort());
    const timers = () => deviceTimers(edgeDevices.device(link.device));
    const heartbeatMs = timers().heartbeatMs ?? config.node.heartbeatMs;
    const leaseSeconds = leaseSecondsFor(
      heartbeatMs,
      timers().leaseSeconds ?? Math.round(config.node.leaseDurationMs / 1000),
    );
    // A Node no replica wrote yet (no address) has no Lease yet either.
    const fresh = edgeDevices.node(node)?.status?.addresses === undefined;
    const got = await lease.acquire(stop.signal, leaseSeconds, 1000, fresh);
    if (got !== "held") {
      if (got === "node-gone") link.close(`Node "${node}" is gone`);
      return;
    }
    let port: number;
    try {
      // The port its Node advertises when that is this replica's (a restart, a reconnect).
      const status = edgeDevices.node(node)?.status;
      const mine = status?.addresses?.some((a) => a.address === config.kubelet.address);
      port = kubelet.portFor(
        node,
        mine ? status?.daemonEndpoints?.kubeletEndpoint?.Port : undefined,
      );
    } catch (err) {
      log.error("device link refused", { device: link.device, error: errorMessage(err) });
      await lease.release();
      link.close(errorMessage(err));
      return;
    }
    const session = new DeviceSession({
      link,
      lease,
      kubelet: { address: config.kubelet.address, port },
      virtualPodUid: () => edgeDevices.virtualPodUid(node),
      cached: {
        edgeDevice: () => edgeDevices.device(link.device),
        virtualPod: () => pods.pod(namespace, node),
      },
      core,
      coordination,
      custom,
      events,
      heartbeatMs: config.node.heartbeatMs,
      leaseSeconds: Math.round(config.node.leaseDurationMs / 1000),
      statusSyncMs: config.node.statusSyncMs,
      maxPods: () => edgeDevices.device(link.device)?.spec?.pod?.allocatable,
      timers,
      onMessage: (direction, kind) =>
        metrics.linkMessagesTotal.inc({ transport: link.transport, direction, kind }),
      log,
    });
    metrics.devicesConnected.inc();
    sessions.set(link.device, session);
    const run = session.run(signal).finally(() => {
      metrics.devicesConnected.dec();
      running.delete(run);
      if (sessions.get(link.device) === session) {
        sessions.delete(link.device);
        // An offline device keeps its port (its Node still names it; callers get a clear
        // "offline" answer); one handed over or deleted frees it.
        if (session.handedOver) kubelet.release(node);
      }
    });
    running.add(run);
    pods.attach({
      device: link.device,
      node: session.node,
      client: session.client,
      closed: link.closed,
    });
  };
  const onLink = (link: Link) => {
    // Authentication already required the EdgeDevice to own the Node of its name; asked again
    // here, as the link is handed the Node (it may have changed in between).
    if (!edgeDevices.ownedDevice(link.device)) {
      log.warn("device link refused: its Node is not this EdgeDevice's", { device: link.device });
      link.close(`EdgeDevice "${link.device}" does not own the Node of its name any more`);
      return;
    }
    if (!membership.healthy) {
      link.close("This aranya replica is not a member now; dial again");
      return;
    }
    const serving = serveLink(link).catch((err) => {
      log.warn("device link failed", { device: link.device, error: errorMessage(err) });
      link.close(errorMessage(err));
    });
    running.add(serving);
    serving.finally(() => running.delete(serving));
  };
  const servers: LinkServer[] = [];
  let websocket: WebSocketLinkServer | undefined;
  if (links.websocket) {
    const w = links.websocket;
    websocket = new WebSocketLinkServer({
      hostname: w.listen.hostname,
      port: w.listen.port,
      path: w.path,
      keepaliveMs: w.keepaliveMs,
      keepaliveFor: (device) => deviceTimers(edgeDevices.device(device)).keepaliveMs,
      tls: await serverTls(w.tls),
      authenticator,
      registry,
      log,
    });
    servers.push(websocket);
  }
  if (links.grpc) {
    const g = links.grpc;
    servers.push(
      new GrpcLinkServer({
        hostname: g.listen.hostname,
        port: g.listen.port,
        keepaliveMs: g.keepaliveMs,
        keepaliveFor: (device) => deviceTimers(edgeDevices.device(device)).keepaliveMs,
        tls: await serverTls(g.tls),
        authenticator,
        registry,
        log,
      }),
    );
  }
  if (mqtt) servers.push(mqtt);

  const controllers = [edgeDevices.run(signal), pods.run(signal)];
  await Promise.race([Promise.all([edgeDevices.ready, pods.ready]), Promise.all(controllers)]);
  const listeners = servers.map((s) => s.run(signal, onLink));
  await Promise.race([Promise.all(servers.map((s) => s.ready)), Promise.all(listeners)]);
  if (!signal.aborted) {
    onServing();
    log.info("serving devices", {
      websocket: websocket?.port,
      watches: edgeDevices.watches + pods.watches + (membership instanceof LeaseMembership ? 1 : 0),
      members: membership.members(),
    });
  }
  await Promise.all([...controllers, ...listeners]);
  await Promise.allSettled([...running, kubeletRun, certRun]);
}

/** A listener's PEM material from its files (client certificates asked for when a CA is set). */
async function serverTls(files: ServerTlsFiles | undefined) {
  if (!files) return undefined;
  const pem = (f: string) => Deno.readTextFile(f);
  return {
    cert: await pem(files.certFile),
    key: await pem(files.keyFile),
    ca: files.clientCaFile ? await pem(files.clientCaFile) : undefined,
    requestCert: files.clientCaFile !== undefined,
  };
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
