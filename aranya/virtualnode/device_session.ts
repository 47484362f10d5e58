/**
 * What aranya does while one device is connected:
 *
 * - it starts once this replica holds the node's Lease (replicas/node_lease.ts:
 *   the device's owner);
 * - on connect it asks for the device's full node info (CMD_NODE_INFO_GET) and
 *   writes it into the Node's status in one write (Ready from the device's own
 *   conditions; the os/arch labels; the address and port where THIS replica
 *   serves the Node's kubelet API); writes the EdgeDevice's status (phase
 *   Connected, conditions Connected and NodeReady, lastSeen, agent, node and
 *   virtual pod) and the virtual pod's status (Running and Ready), and records
 *   a Connected Event;
 * - while the link is up, every heartbeat it renews the node's Lease in
 *   kube-node-lease and asks the device nothing: the link's own liveness
 *   (transport keepalives) is the heartbeat. A renewal that finds another
 *   replica holding the Lease closes the link (that replica serves the device
 *   now) and writes nothing more;
 * - the device pushes its node status (unsolicited MSG_NODE_STATUS) when a
 *   condition or a resource changed; the Node status (and with it the
 *   EdgeDevice's NodeReady and lastSeen) is written then, and otherwise
 *   rewritten from what the device last said at least every `statusSyncMs`
 *   (lastHeartbeatTime), never on every heartbeat: an idle device costs one
 *   Lease write per heartbeat and no traffic on its link but keepalives;
 * - when the link closes it marks the Node Ready=False, the EdgeDevice
 *   Disconnected and the virtual pod not Ready (all with reason
 *   EdgeDeviceDisconnected), records a Warning Disconnected Event, and then
 *   clears itself as the Lease's holder (so a replica the device dials next
 *   takes over at once).
 *
 * The EdgeDevice's `spec.connectivity.timers` override the heartbeat, lease
 * duration, status sync and unary timeout per device (device_timers.ts).
 * Every write is read-modify-write with the object's resourceVersion, retried
 * on a conflict; failures are logged and never end the session.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { V1Node, V1Pod, V1PodStatus } from "@kubernetes/client-node";
import type { CoordinationApi, CoreApi, CustomObjectsApi } from "../kube/apis.ts";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { type AranyaError, errorMessage } from "@aranya/common/errors";
import { deferred } from "@aranya/common/deferred";
import type { Link, LinkCloseInfo } from "@aranya/common/link";
import { type Logger, nullLogger } from "@aranya/common/log";
import { nodeStatusKey } from "@aranya/common/node_status_key";
import { SessionClient } from "@aranya/common/session/session_client";
import {
  NodeInfoGetCmd_Kind,
  NodeInfoGetCmdSchema,
  type NodeStatusMsg,
  NodeStatusMsgSchema,
} from "@aranya/proto/gen/aranya/node_pb";
import {
  connectedStatus,
  disconnectedStatus as edgeDeviceDisconnected,
  type NodeReadyInfo,
  pendingStatus,
  syncedStatus,
} from "../edgedevice/edge_device_status.ts";
import {
  API_VERSION,
  type EdgeDevice,
  type EdgeDeviceStatus,
  GROUP,
  KIND,
  PLURAL,
  VERSION,
} from "../edgedevice/types.ts";
import { disconnectedPodStatus, runningStatus } from "../edgedevice/virtual_pod.ts";
import { type DeviceTimers, leaseSecondsFor } from "../edgedevice/device_timers.ts";
import { apiStatus, fromApiError } from "../kube/errors.ts";
import type { NodeLease } from "../replicas/node_lease.ts";
import { type EventRecorder, nullEventRecorder, type ObjectRef } from "../kube/event_recorder.ts";
import {
  agentInfoFrom,
  disconnectedStatus,
  nodeLabelsFrom,
  nodeStatusFrom,
} from "./node_status.ts";

/** Options for {@link DeviceSession}. */
export interface DeviceSessionOptions {
  link: Link;
  /** The node's Lease, held by this replica (acquired before the session runs). */
  lease: NodeLease;
  /** Where this replica serves the Node's kubelet API (written into the Node's status). */
  kubelet: { address: string; port: number };
  /** The virtual pod's uid, when the Node records it (written into the EdgeDevice's status). */
  virtualPodUid?: () => string | undefined;
  /**
   * The objects as the informers cache them, for the first read of each
   * read-modify-write (a stale one costs a conflict and a read; without them
   * every write reads first).
   */
  cached?: {
    edgeDevice?: () => EdgeDevice | undefined;
    virtualPod?: () => V1Pod | undefined;
  };
  core: CoreApi;
  coordination: CoordinationApi;
  /** For the EdgeDevice's status subresource. */
  custom: CustomObjectsApi;
  /** Where the Connected/Disconnected Events go (default: nowhere). */
  events?: EventRecorder;
  /** Lease renewal interval, ms (default 10 s). */
  heartbeatMs?: number;
  /** Lease duration, seconds (default 40). */
  leaseSeconds?: number;
  /** Longest time between Node status writes while nothing changes, ms (default 5 min). */
  statusSyncMs?: number;
  /** The EdgeDevice's spec.pod.allocatable: the Node's pod capacity (default: the device's). */
  maxPods?: () => number | undefined;
  /**
   * The EdgeDevice's spec.connectivity.timers, read at each use (the unary
   * timeout when the link is accepted); they override the options above.
   */
  timers?: () => DeviceTimers;
  /** Default unary command timeout, ms (SessionClient's default: 60 s). */
  unaryTimeoutMs?: number;
  /** Observes every message on the link, by kind (see SessionClientOptions.onMessage). */
  onMessage?: (direction: "sent" | "received", kind: string) => void;
  log?: Logger;
  /** Clock, injectable for tests. */
  now?: () => Date;
}

/** What a session writes through the API (one counter each). */
export type WriteKind = "lease" | "node" | "edgeDevice" | "pod" | "event";

/** Attempts per write when the object changed between read and write. */
const CONFLICT_ATTEMPTS = 4;

/** One connected device. */
export class DeviceSession {
  readonly #o: DeviceSessionOptions;
  readonly #log: Logger;
  readonly #events: EventRecorder;
  readonly #now: () => Date;
  readonly #connected = deferred<void>();
  readonly #closed = deferred<void>();
  readonly client: SessionClient;
  /** The device's namespace (its EdgeDevice's and virtual pod's). */
  readonly namespace: string;
  /** The device's name, which is its Node's and virtual pod's. */
  readonly node: string;
  /** API writes made for this device, by kind (for the scale figures). */
  readonly writeCounts: Record<WriteKind, number> = {
    lease: 0,
    node: 0,
    edgeDevice: 0,
    pod: 0,
    event: 0,
  };

  constructor(opts: DeviceSessionOptions) {
    this.#o = opts;
    [this.namespace, this.node] = opts.link.device.split("/") as [string, string];
    this.#log = (opts.log ?? nullLogger).with({ device: opts.link.device });
    this.#events = opts.events ?? nullEventRecorder;
    this.#now = opts.now ?? (() => new Date());
    this.client = new SessionClient(opts.link, {
      unaryTimeoutMs: opts.timers?.().unaryTimeoutMs ?? opts.unaryTimeoutMs,
      onMessage: opts.onMessage,
      log: this.#log,
    });
  }

  /** Set by `resync`: the next sync writes the device's full node info. */
  #needFull = false;
  #wake?: () => void;

  /**
   * Asks for the device's full node info and writes it into the Node at once
   * (call when the Node was recreated: the new one has no node info).
   * Non-blocking; a no-op once the link closed.
   */
  resync(): void {
    this.#needFull = true;
    this.#wake?.();
  }

  /** The Node's Ready status and resourceVersion as this session last wrote them. */
  #written?: { ready?: string; resourceVersion?: string };
  /** Set by `nodeSeen`: the next pass writes the Node status again. */
  #needWrite = false;

  /**
   * Tells the session the Node as the cache saw it after a change. When another writer changed
   * its Ready condition (the node lifecycle controller marks it Unknown when the heartbeats came
   * late), the session writes the device's status again at once, as the kubelet's next status
   * update does when the Node differs from what it computes. Non-blocking; a no-op before the
   * first write and once the link closed.
   */
  nodeSeen(node: V1Node): void {
    const w = this.#written;
    if (!w || node.metadata?.resourceVersion === w.resourceVersion) return;
    if (readyOf(node)?.status === w.ready) return;
    this.#needWrite = true;
    this.#wake?.();
  }

  /** API writes made for this device, all kinds together. */
  get writes(): number {
    return Object.values(this.writeCounts).reduce((a, b) => a + b, 0);
  }

  /**
   * Resolves once the connect-time writes (Node, EdgeDevice and virtual pod
   * status, the Connected Event) were made or failed. Never rejects.
   */
  get connected(): Promise<void> {
    return this.#connected.promise;
  }

  /** Resolves once the link closed and the disconnect writes were made or failed. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /**
   * Runs until the link closes, or until `signal` aborts (which closes the link); then marks the
   * device disconnected. Never rejects.
   */
  async run(signal?: AbortSignal): Promise<void> {
    const stop = () => this.#o.link.close("This aranya replica is stopping; dial again");
    if (signal?.aborted) stop();
    else signal?.addEventListener("abort", stop, { once: true });
    try {
      await this.#run();
    } finally {
      signal?.removeEventListener("abort", stop);
      if (!this.#removed) await this.#o.lease.release();
      this.#connected.resolve();
      this.#closed.resolve();
    }
  }

  async #run(): Promise<void> {
    const closed = this.#o.link.closed;
    let closeInfo: LinkCloseInfo | undefined;
    let stopped = false;
    closed.then((i) => {
      closeInfo = i;
      stopped = true;
      this.#written = undefined;
    });
    /** Key of what the Node status was last written from, and when. */
    let lastKey = "";
    let lastWrite = 0;
    /** The device's status as last heard (a reply or a push). */
    let known: NodeStatusMsg | undefined;
    /** A push not yet looked at. */
    let pushed: NodeStatusMsg | undefined;
    /** The full node info from the first sync (with the agent's system info). */
    let agent: NodeStatusMsg | undefined;
    this.client.onUnsolicited((m) => {
      if (m.kind !== MsgKind.MSG_NODE_STATUS) return;
      try {
        pushed = fromBinary(NodeStatusMsgSchema, m.payload);
      } catch (err) {
        this.#log.warn("ignoring a malformed node status", { error: errorMessage(err) });
        return;
      }
      this.#wake?.();
    });
    this.client.start();
    const timers = () => this.#o.timers?.() ?? {};
    const statusSyncMs = () => timers().statusSyncMs ?? this.#o.statusSyncMs ?? 300_000;
    const nowMs = () => this.#now().getTime();
    /**
     * Writes the Node status from `msg` (`full`: with node info and labels). One write: the
     * status subresource of a Node takes its labels too, so the Node never turns Ready without
     * them (a DaemonSet selecting kubernetes.io/os must not see a Ready Node without).
     */
    const write = async (msg: NodeStatusMsg, full: boolean): Promise<V1Node> => {
      const node = await this.#writeNodeStatus((node) => {
        const next = nodeStatusFrom(msg, node.status, this.#now(), this.#o.maxPods?.());
        if (!full) next.nodeInfo = node.status?.nodeInfo;
        return next;
      }, full ? nodeLabelsFrom(msg) : undefined);
      if (!stopped) {
        this.#written = {
          ready: readyOf(node)?.status,
          resourceVersion: node.metadata?.resourceVersion,
        };
      }
      known = msg;
      lastKey = nodeStatusKey(msg);
      lastWrite = nowMs();
      return node;
    };
    /** Asks the device for everything and writes it (on connect, and after `resync`). */
    const fullSync = async (): Promise<V1Node> => {
      const reply = await this.client.request(
        CmdKind.CMD_NODE_INFO_GET,
        toBinary(
          NodeInfoGetCmdSchema,
          create(NodeInfoGetCmdSchema, { kind: NodeInfoGetCmd_Kind.ALL }),
        ),
      );
      const msg = fromBinary(NodeStatusMsgSchema, reply.payload);
      agent = msg;
      return await write(msg, true);
    };

    // Connect. Of the Node only its Ready and address are kept (not the object, for as long as
    // the session lives).
    let nodeReady: NodeReadyInfo | undefined;
    let hostIP: string | undefined;
    {
      let node: V1Node | undefined;
      try {
        node = await fullSync();
        this.#log.info("edge node is ready", { node: this.node });
      } catch (err) {
        this.#log.warn("first node status sync failed", { error: errorMessage(err) });
        this.#needFull = true;
        node = await this.#o.core.readNode({ name: this.node }).catch(() => undefined);
      }
      nodeReady = readyOf(node);
      hostIP = internalIP(node);
    }
    const now = this.#now();
    const vpUid = this.#o.virtualPodUid?.();
    await this.#writeEdgeDeviceStatus(
      "marking the edge device connected",
      (s) =>
        connectedStatus(
          pendingStatus(s, this.node, now, vpUid ? { name: this.node, uid: vpUid } : undefined),
          {
            node: this.node,
            transport: this.#o.link.transport,
            nodeReady,
            agent: agent ? agentInfoFrom(agent) : undefined,
            now,
          },
        ),
    );
    await this.#writePodStatus(
      "marking the virtual pod running",
      (s) => runningStatus(s, { device: this.node, hostIP, now }),
    );
    await this.#event("Normal", "Connected", `Connected over ${this.#o.link.transport}`);
    this.#connected.resolve();

    // Connected: Lease renewals; Node status from pushes, and from what is known when due.
    // The Lease was written when this replica took the device: the first renewal is a heartbeat
    // away.
    let nextLease = nowMs() + (timers().heartbeatMs ?? this.#o.heartbeatMs ?? 10_000);
    /** A status whose write failed: written again at the next heartbeat. */
    let retry: NodeStatusMsg | undefined;
    while (!stopped) {
      const heartbeat = timers().heartbeatMs ?? this.#o.heartbeatMs ?? 10_000;
      if (nowMs() >= nextLease) {
        try {
          if (!await this.#o.lease.renew(this.#leaseSeconds(heartbeat))) {
            this.#lost = true;
            this.#log.info("another replica serves the device now; closing this link");
            this.#o.link.close("Another aranya replica serves this device now");
            break;
          }
          this.writeCounts.lease++;
        } catch (err) {
          this.#log.warn("lease renewal failed", { error: errorMessage(err) });
        }
        nextLease = nowMs() + heartbeat;
        pushed ??= retry;
        retry = undefined;
      }
      let synced: V1Node | undefined;
      const full = this.#needFull;
      this.#needFull = false;
      const rewrite = this.#needWrite;
      this.#needWrite = false;
      const push = pushed;
      pushed = undefined;
      const latest = push ?? known;
      try {
        if (full) synced = await fullSync();
        else if (push && nodeStatusKey(push) !== lastKey) synced = await write(push, false);
        else if (latest && (rewrite || nowMs() - lastWrite >= statusSyncMs())) {
          synced = await write(latest, false);
        } else if (push) known = push;
      } catch (err) {
        if (full) this.#needFull = true;
        else retry = latest;
        if (!stopped) this.#log.warn("node status sync failed", { error: errorMessage(err) });
      }
      if (synced && !stopped) {
        await this.#writeEdgeDeviceStatus(
          "syncing the edge device status",
          (s) => syncedStatus(s, readyOf(synced), this.#now()),
        );
      }
      // New work arrived meanwhile (a push, a resync): look at it now. A failed full sync is
      // retried at the next heartbeat.
      if (stopped || pushed || (this.#needFull && !full) || this.#needWrite) continue;
      const due = known && !retry ? Math.min(nextLease, lastWrite + statusSyncMs()) : nextLease;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        closed,
        new Promise<void>((r) => {
          this.#wake = r;
          timer = setTimeout(r, Math.max(0, due - nowMs()));
        }),
      ]);
      clearTimeout(timer);
      this.#wake = undefined;
    }

    // Disconnected: written only while this replica still owns the device (a replica that took
    // it over writes its state now).
    const info = closeInfo ?? await closed;
    if (this.#lost || this.#removed) return;
    try {
      if (!await this.#o.lease.renew(this.#leaseSeconds(timers().heartbeatMs ?? 10_000))) {
        this.#log.info("another replica serves the device now; not marking it disconnected");
        return;
      }
    } catch (err) {
      this.#log.warn("lease renewal failed", { error: errorMessage(err) });
    }
    const why = `The link closed (${
      info.by === "local" ? "by aranya" : info.by === "remote" ? "by the device" : "on an error"
    }): ${info.reason}`;
    try {
      await this.#writeNodeStatus((node) => disconnectedStatus(node.status, this.#now()));
      this.#log.info("edge node disconnected", { node: this.node, reason: info.reason });
    } catch (err) {
      if ((err as AranyaError).kind !== "not-found") {
        this.#log.warn("marking the node disconnected failed", { error: errorMessage(err) });
      } else {
        // The Node is gone: the EdgeDevice was deleted (that closed the link). Its status, virtual
        // pod and Events went with it.
        this.#log.info("edge device removed; link closed", { node: this.node });
        return;
      }
    }
    const then = this.#now();
    await this.#writeEdgeDeviceStatus(
      "marking the edge device disconnected",
      (s) => edgeDeviceDisconnected(s, why, then),
    );
    await this.#writePodStatus(
      "marking the virtual pod not ready",
      (s) => disconnectedPodStatus(s, then),
    );
    await this.#event("Warning", "Disconnected", why);
  }

  /** Set when another replica took the device over: this session writes nothing more. */
  #lost = false;
  /** Set by `remove`: the device is being deleted; nothing is written on disconnect. */
  #removed = false;

  /** True once the device is another replica's, or being deleted (not merely disconnected). */
  get handedOver(): boolean {
    return this.#lost || this.#removed;
  }

  /**
   * The device's EdgeDevice is being deleted: closes the link and writes
   * nothing more (its Node, Lease, virtual pod and status go with it; the
   * replica whose share it is removes them). Non-blocking.
   */
  remove(reason: string): void {
    this.#removed = true;
    this.#o.link.close(reason);
  }

  /** The node Lease's duration for `heartbeatMs`. */
  #leaseSeconds(heartbeatMs: number): number {
    return leaseSecondsFor(
      heartbeatMs,
      this.#o.timers?.().leaseSeconds ?? this.#o.leaseSeconds ?? 40,
    );
  }

  /**
   * Read-modify-write of the Node's status (with this replica's kubelet
   * address and port, and `labels` when given); resolves with the Node as written.
   */
  #writeNodeStatus(
    change: (node: V1Node) => V1Node["status"],
    labels?: Record<string, string>,
  ): Promise<V1Node> {
    const { address, port } = this.#o.kubelet;
    return this.#update(
      "node",
      `Updating the status of Node "${this.node}"`,
      // Read from the API, not the cache: others write a new Node at once (the node lifecycle
      // controller's taints), so a cached copy would mostly cost a conflict.
      () => this.#o.core.readNode({ name: this.node }),
      (node) => ({
        ...node,
        metadata: labels
          ? { ...node.metadata, labels: { ...node.metadata?.labels, ...labels } }
          : node.metadata,
        status: {
          ...change(node),
          addresses: [{ type: "InternalIP", address }],
          daemonEndpoints: { kubeletEndpoint: { Port: port } },
        },
      }),
      (node) => this.#o.core.replaceNodeStatus({ name: this.node, body: node }),
    );
  }

  /** Read-modify-write of the EdgeDevice's status; failures are logged. */
  async #writeEdgeDeviceStatus(
    what: string,
    change: (s: EdgeDeviceStatus | undefined) => EdgeDeviceStatus,
  ): Promise<void> {
    const params = { group: GROUP, version: VERSION, plural: PLURAL };
    try {
      const ed = await this.#update(
        "edgeDevice",
        `Updating the status of EdgeDevice "${this.#o.link.device}"`,
        this.#cachedFirst(
          () => this.#o.cached?.edgeDevice?.(),
          () =>
            this.#o.custom.getNamespacedCustomObject({
              ...params,
              namespace: this.namespace,
              name: this.node,
            }) as Promise<EdgeDevice>,
        ),
        (ed) => ({ ...ed, status: change(ed.status) }),
        (ed) =>
          this.#o.custom.replaceNamespacedCustomObjectStatus({
            ...params,
            namespace: this.namespace,
            name: this.node,
            body: ed,
          }),
      );
      this.#uid = ed.metadata?.uid;
    } catch (err) {
      this.#log.warn(`${what} failed`, { error: errorMessage(err) });
    }
  }

  /** Read-modify-write of the virtual pod's status; failures are logged. */
  async #writePodStatus(
    what: string,
    change: (s: V1PodStatus) => V1PodStatus,
  ): Promise<void> {
    const ref = { name: this.node, namespace: this.namespace };
    try {
      await this.#update(
        "pod",
        `Updating the status of the virtual pod "${this.#o.link.device}"`,
        this.#cachedFirst(
          () => this.#o.cached?.virtualPod?.(),
          () => this.#o.core.readNamespacedPod(ref),
        ),
        (pod) => ({ ...pod, status: change(pod.status ?? {}) }),
        (pod) => this.#o.core.replaceNamespacedPodStatus({ ...ref, body: pod }),
      );
    } catch (err) {
      this.#log.warn(`${what} failed`, { error: errorMessage(err) });
    }
  }

  /** The EdgeDevice's uid, once read (for Events). */
  #uid: string | undefined;

  async #event(type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const ref: ObjectRef = {
      apiVersion: API_VERSION,
      kind: KIND,
      name: this.node,
      namespace: this.namespace,
      uid: this.#uid,
    };
    if (await this.#events.record(ref, type, reason, message)) this.writeCounts.event++;
  }

  /**
   * A read for {@link #update}: the cached object (a copy) on the first
   * attempt when there is one, the API after that.
   */
  #cachedFirst<T>(
    cached: () => T | undefined,
    read: () => Promise<T>,
  ): (attempt: number) => Promise<T> {
    return (attempt) => {
      const c = attempt === 1 ? cached() : undefined;
      return c ? Promise.resolve(structuredClone(c)) : read();
    };
  }

  /**
   * Reads, changes and writes one object; retried when it changed in between
   * (HTTP 409). Throws the domain error naming `what`; writes nothing when
   * `change` returns an equal object.
   */
  async #update<T>(
    kind: WriteKind,
    what: string,
    read: (attempt: number) => Promise<T>,
    change: (current: T) => T,
    write: (next: T) => Promise<unknown>,
  ): Promise<T> {
    for (let attempt = 1;; attempt++) {
      try {
        const current = await read(attempt);
        const next = change(current);
        if (JSON.stringify(next) === JSON.stringify(current)) return current;
        await write(next);
        this.writeCounts[kind]++;
        return next;
      } catch (err) {
        if (apiStatus(err) === 409 && attempt < CONFLICT_ATTEMPTS) continue;
        throw fromApiError(what, err);
      }
    }
  }
}

/** The Node's Ready condition. */
function readyOf(node: V1Node | undefined): NodeReadyInfo | undefined {
  return node?.status?.conditions?.find((c) => c.type === "Ready");
}

/** The kubelet address the Node advertises (its InternalIP). */
function internalIP(node: V1Node | undefined): string | undefined {
  const addrs = node?.status?.addresses ?? [];
  return (addrs.find((a) => a.type === "InternalIP") ?? addrs[0])?.address;
}
