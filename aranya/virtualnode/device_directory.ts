/**
 * The device directory: what happens on one replica when a device connects,
 * changes or goes away. It is the one place that ties the parts together per
 * device:
 *
 * - a link arrives (any transport): the EdgeDevice must still own the Node of
 *   its name and this replica must be a member; then the device's node Lease
 *   is taken (replicas/node_lease.ts), a kubelet port is given to its Node and
 *   a {@link DeviceSession} runs, attached to the pod controller;
 * - an EdgeDevice is seen: counted, its pods re-checked against its tenancy
 *   rules, and (MQTT devices) its topics subscribed while it is this replica's
 *   share;
 * - an EdgeDevice is deleted: its session ends (the link closes), its
 *   credentials are forgotten by the authenticator's cache, its MQTT topics
 *   unsubscribed, its kubelet port freed;
 * - a device's Node is recreated or turned Unknown by another writer: the
 *   session writes it again at once;
 * - the members change: the keys new to this replica are reconciled, MQTT
 *   devices follow the share, and a replica that is no longer a member closes
 *   every link (fencing: before another replica may take the devices).
 *
 * It subscribes to the EdgeDevice controller's hooks in its constructor (no
 * I/O there) and runs the port sweep and the sessions in `run(signal)`.
 *
 * @module
 */
import { errorMessage } from "@aranya/common/errors";
import type { Link, LinkRegistry } from "@aranya/common/link";
import { type Logger, nullLogger } from "@aranya/common/log";
import type { V1Node } from "@kubernetes/client-node";
import type { CoordinationApi, CoreApi, CustomObjectsApi } from "../kube/apis.ts";
import type { EventRecorder } from "../kube/event_recorder.ts";
import type { EdgeDeviceController } from "../edgedevice/controller.ts";
import type { EdgeDevice } from "../edgedevice/types.ts";
import { deviceTimers, leaseSecondsFor } from "../edgedevice/device_timers.ts";
import type { MqttLinkServer } from "../connectivity/mqtt/mqtt_link_server.ts";
import type { SecretAuthenticator } from "../connectivity/secret_authenticator.ts";
import type { KubeletServer } from "../kubelet/kubelet_server.ts";
import type { Membership } from "../replicas/membership.ts";
import { ownerOf } from "../replicas/membership.ts";
import { NodeLease } from "../replicas/node_lease.ts";
import type { createMetrics } from "../metrics/aranya_metrics.ts";
import { DeviceSession } from "./device_session.ts";
import type { PodController } from "./pod_controller.ts";

/** How often ports of Nodes this replica no longer serves are freed. */
const PORT_SWEEP_MS = 60_000;

/** The kubelet ports a directory hands out (the kubelet API server's part it uses). */
export type KubeletPorts = Pick<KubeletServer, "ports" | "portFor" | "release">;

/** Options for {@link DeviceDirectory}. */
export interface DeviceDirectoryOptions {
  /** The address every Node of this replica advertises (config `kubelet.address`). */
  kubeletAddress: string;
  /** The Node timers (config `node`), ms; a device's EdgeDevice timers win. */
  node: { heartbeatMs: number; leaseDurationMs: number; statusSyncMs: number };
  /** The API clients the sessions and node Leases write through. */
  clients: {
    core: CoreApi;
    custom: CustomObjectsApi;
    coordination: CoordinationApi;
    /** The same API, its requests taking the next free slot first (Lease renewals). */
    heartbeats: CoordinationApi;
  };
  events: EventRecorder;
  registry: LinkRegistry;
  authenticator: Pick<SecretAuthenticator, "forget" | "prime">;
  /** The MQTT broker connection, when `links.mqtt` is configured. */
  mqtt?: Pick<MqttLinkServer, "addDevice" | "removeDevice">;
  membership: Membership;
  /** The EdgeDevice controller: its caches answer who a device is; its hooks drive this. */
  devices: Pick<
    EdgeDeviceController,
    "subscribe" | "ownedDevice" | "ownerOf" | "device" | "node" | "virtualPodUid" | "resync"
  >;
  pods: Pick<PodController, "attach" | "pod" | "deviceChanged">;
  kubelet: KubeletPorts;
  metrics: ReturnType<typeof createMetrics>;
  log?: Logger;
}

/** Every device this replica knows of, and the sessions of those whose links it holds. */
export class DeviceDirectory {
  readonly #o: DeviceDirectoryOptions;
  readonly #log: Logger;
  /** Keys of every EdgeDevice seen (all replicas keep all of them). */
  readonly #known = new Set<string>();
  readonly #sessions = new Map<string, DeviceSession>();
  readonly #running = new Set<Promise<void>>();
  #membersBefore: string[];
  #signal?: AbortSignal;

  constructor(opts: DeviceDirectoryOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
    this.#membersBefore = opts.membership.members();
    opts.devices.subscribe({
      onDevice: (ed) => this.#deviceSeen(ed),
      onDeviceRemoved: (namespace, name) => this.#deviceRemoved(namespace, name),
      // A Node recreated under a connected device gets the device's full node info again.
      onNodeCreated: (namespace, name) => this.#sessions.get(`${namespace}/${name}`)?.resync(),
      // A Node turned Unknown by the node lifecycle controller (late heartbeats) while its
      // device is connected here is written Ready again at once, not at the next status sync.
      onNodeChanged: (namespace, name, node: V1Node) =>
        this.#sessions.get(`${namespace}/${name}`)?.nodeSeen(node),
      // The token this replica just made: the device's first dial here needs no Secret read.
      onCredentials: (device, uid, token) => opts.authenticator.prime(device, uid, token),
    });
    opts.membership.onChange(() => this.#membersChanged());
  }

  /** Devices whose sessions run here now. */
  get connected(): number {
    return this.#sessions.size;
  }

  /**
   * Serves `link` (what every link server calls with an accepted link): refused at once when
   * its EdgeDevice no longer owns the Node or this replica is not a member; otherwise served in
   * the background once the device's node Lease is held. Never throws; failures close the link.
   */
  onLink(link: Link): void {
    // Authentication already required the EdgeDevice to own the Node of its name; asked again
    // here, as the link is handed the Node (it may have changed in between).
    if (!this.#o.devices.ownedDevice(link.device)) {
      this.#log.warn("device link refused: its Node is not this EdgeDevice's", {
        device: link.device,
      });
      link.close(`EdgeDevice "${link.device}" does not own the Node of its name any more`);
      return;
    }
    if (!this.#o.membership.healthy || !this.#signal || this.#signal.aborted) {
      link.close("This aranya replica is not a member now; dial again");
      return;
    }
    const serving = this.#serve(link, this.#signal).catch((err) => {
      this.#log.warn("device link failed", { device: link.device, error: errorMessage(err) });
      link.close(errorMessage(err));
    });
    this.#track(serving);
  }

  /**
   * Runs until `signal` aborts: frees the ports of Nodes no longer served here once a minute,
   * and resolves when every session has ended. Links are served only while it runs.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.#signal = signal;
    const sweep = setInterval(() => this.#sweepPorts(), PORT_SWEEP_MS);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    clearInterval(sweep);
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
  }

  #track(p: Promise<void>): void {
    this.#running.add(p);
    p.finally(() => this.#running.delete(p));
  }

  #deviceSeen(ed: EdgeDevice): void {
    this.#known.add(`${ed.metadata?.namespace}/${ed.metadata?.name}`);
    this.#o.metrics.edgeDevices.set(this.#known.size);
    // A changed tenancy rule re-checks the pods on the device's Node at once.
    this.#o.pods.deviceChanged(ed);
    this.#mqttShare(ed);
  }

  #deviceRemoved(namespace: string, name: string): void {
    const o = this.#o;
    const key = `${namespace}/${name}`;
    this.#known.delete(key);
    o.metrics.edgeDevices.set(this.#known.size);
    o.mqtt?.removeDevice(key);
    // Tell the device: its link closes; it cannot dial back (its credentials are gone, and
    // forgotten here rather than served from the token cache).
    o.authenticator.forget(key);
    const why = `EdgeDevice "${key}" was deleted`;
    const session = this.#sessions.get(key);
    if (session) session.remove(why);
    else o.registry.get(key)?.close(why);
    // The Node's port goes with the Node: not when a same-named EdgeDevice of another namespace,
    // which never owned it, is deleted.
    const owner = o.devices.ownerOf(name);
    if (!session && (!owner || owner.metadata?.namespace === namespace)) o.kubelet.release(name);
  }

  /** MQTT devices are served by the replica whose share they are (their link is the broker). */
  #mqttShare(ed: EdgeDevice): void {
    const o = this.#o;
    const key = `${ed.metadata?.namespace}/${ed.metadata?.name}`;
    const conn = ed.spec?.connectivity;
    if (conn?.method !== "mqtt" || !o.membership.owns(key)) {
      o.mqtt?.removeDevice(key);
      return;
    }
    const ns = conn.mqttConfig?.messageNamespace;
    if (!o.mqtt || !ns) {
      this.#log.warn(
        "EdgeDevice uses mqtt, but aranya has no MQTT broker configured (links.mqtt)",
        {
          device: key,
        },
      );
      return;
    }
    o.mqtt.addDevice(key, ns).catch((err) =>
      this.#log.warn("subscribing the device's MQTT topics failed", {
        device: key,
        error: errorMessage(err),
      })
    );
  }

  /**
   * The share moved: reconcile the keys that are new to this replica; MQTT devices follow the
   * share. Not a member any more: close every link now, before the others may take the devices
   * (fencing).
   */
  #membersChanged(): void {
    const o = this.#o;
    const before = this.#membersBefore;
    this.#membersBefore = o.membership.members();
    o.devices.resync((key) => ownerOf(key, before) !== o.membership.identity);
    for (const key of this.#known) {
      const ed = o.devices.device(key);
      if (ed) this.#mqttShare(ed);
    }
    if (!o.membership.healthy && !this.#signal?.aborted) {
      for (const key of this.#sessions.keys()) {
        o.registry.get(key)?.close("This aranya replica lost its membership; dial again");
      }
    }
  }

  /** Ports of offline devices whose Node now names another replica, or that are gone. */
  #sweepPorts(): void {
    const o = this.#o;
    for (const [node, port] of o.kubelet.ports) {
      const owner = o.devices.ownerOf(node);
      if (owner && this.#sessions.has(`${owner.metadata?.namespace}/${node}`)) continue;
      const status = o.devices.node(node)?.status;
      const ours = status?.addresses?.some((a) => a.address === o.kubeletAddress) &&
        status?.daemonEndpoints?.kubeletEndpoint?.Port === port;
      if (!ours) o.kubelet.release(node);
    }
  }

  /** Serves `link` once this replica owns the device (its node Lease). */
  async #serve(link: Link, signal: AbortSignal): Promise<void> {
    const o = this.#o;
    const [namespace, node] = link.device.split("/") as [string, string];
    const lease = new NodeLease({
      coordination: o.clients.coordination,
      heartbeats: o.clients.heartbeats,
      core: o.clients.core,
      node,
      membership: o.membership,
      cachedNodeUid: () => o.devices.node(node)?.metadata?.uid,
      log: this.#log,
    });
    const stop = new AbortController();
    link.closed.then(() => stop.abort());
    const timers = () => deviceTimers(o.devices.device(link.device));
    const heartbeatMs = timers().heartbeatMs ?? o.node.heartbeatMs;
    const leaseSeconds = leaseSecondsFor(
      heartbeatMs,
      timers().leaseSeconds ?? Math.round(o.node.leaseDurationMs / 1000),
    );
    // A Node no replica wrote yet (no address) has no Lease yet either.
    const fresh = o.devices.node(node)?.status?.addresses === undefined;
    const got = await lease.acquire(stop.signal, leaseSeconds, 1000, fresh);
    if (got !== "held") {
      if (got === "node-gone") link.close(`Node "${node}" is gone`);
      return;
    }
    let port: number;
    try {
      // The port its Node advertises when that is this replica's (a restart, a reconnect).
      const status = o.devices.node(node)?.status;
      const mine = status?.addresses?.some((a) => a.address === o.kubeletAddress);
      port = o.kubelet.portFor(
        node,
        mine ? status?.daemonEndpoints?.kubeletEndpoint?.Port : undefined,
      );
    } catch (err) {
      this.#log.error("device link refused", { device: link.device, error: errorMessage(err) });
      await lease.release();
      link.close(errorMessage(err));
      return;
    }
    const session = new DeviceSession({
      link,
      lease,
      kubelet: { address: o.kubeletAddress, port },
      virtualPodUid: () => o.devices.virtualPodUid(node),
      cached: {
        edgeDevice: () => o.devices.device(link.device),
        virtualPod: () => o.pods.pod(namespace, node),
      },
      core: o.clients.core,
      coordination: o.clients.coordination,
      custom: o.clients.custom,
      events: o.events,
      heartbeatMs: o.node.heartbeatMs,
      leaseSeconds: Math.round(o.node.leaseDurationMs / 1000),
      statusSyncMs: o.node.statusSyncMs,
      maxPods: () => o.devices.device(link.device)?.spec?.pod?.allocatable,
      timers,
      onMessage: (direction, kind) =>
        o.metrics.linkMessagesTotal.inc({ transport: link.transport, direction, kind }),
      log: this.#log,
    });
    o.metrics.devicesConnected.inc();
    this.#sessions.set(link.device, session);
    this.#track(
      session.run(signal).finally(() => {
        o.metrics.devicesConnected.dec();
        if (this.#sessions.get(link.device) === session) {
          this.#sessions.delete(link.device);
          // An offline device keeps its port (its Node still names it; callers get a clear
          // "offline" answer); one handed over or deleted frees it.
          if (session.handedOver) o.kubelet.release(node);
        }
      }),
    );
    o.pods.attach({
      device: link.device,
      node: session.node,
      client: session.client,
      closed: link.closed,
    });
  }
}
