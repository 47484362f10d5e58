/**
 * Runs the EdgeDevice reconciler: ONE watch on EdgeDevices in all namespaces,
 * or one per watched namespace when `namespaces` lists some (client-node's
 * informer: list, then watch, relist after 410 Gone), and ONE watch on the
 * edge Nodes (label selector arhat.dev/role=EdgeDevice), feed a keyed work
 * queue; the reconciler starts from the cached state for each key. A Node
 * that is deleted or changed enqueues the EdgeDevices of its name, so a Node
 * deleted while its EdgeDevice exists is recreated within seconds, and a
 * device waiting for a taken name gets it once the name is free; a Node whose
 * EdgeDevice is gone enqueues that key, so it is removed. The number of
 * watches does not grow with the number of devices.
 *
 * Every replica runs the watches (all keep the caches), but a key is
 * reconciled only by the replica whose share it is (`owns`, from
 * replicas/membership.ts); `resync` enqueues every key again when the
 * members change. The hooks ({@link EdgeDeviceHooks}: options and `subscribe`)
 * come from the watches on every replica.
 *
 * The two caches also answer, without I/O, who a device and a Node are
 * ({@link EdgeDirectory}): the rest of aranya asks them instead of trusting
 * names or labels.
 */
import type { KubernetesObject, V1Node } from "@kubernetes/client-node";
import type { CoordinationApi, CoreApi, CustomObjectsApi } from "../kube/apis.ts";
import { errorMessage } from "@aranya/common/errors";
import { readySignal } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";
import type { EventRecorder } from "../kube/event_recorder.ts";
import { WorkQueue } from "../kube/work_queue.ts";
import { Informer } from "../kube/informer.ts";
import type { KubeHttp } from "../kube/kube_http.ts";
import { WatchRestarts } from "../kube/watch_restarts.ts";
import { type DeviceHook, type DeviceRemovedHook, EdgeDeviceReconciler } from "./reconciler.ts";
import {
  ANNOTATION_OWNER_UID,
  ANNOTATION_VIRTUAL_POD_UID,
  type EdgeDevice,
  GROUP,
  LABEL_NAMESPACE,
  LABEL_ROLE,
  PLURAL,
  VERSION,
} from "./types.ts";

/** An informer with its cache. */
type Cached<T extends KubernetesObject> = Informer<T>;

/** Who devices and Nodes are, from the controller's caches (no I/O). */
export interface EdgeDirectory {
  /** The EdgeDevice `namespace/name` as last seen, if it exists. */
  device(key: string): EdgeDevice | undefined;
  /**
   * The EdgeDevice that Node `node` was created for: the Node carries that
   * EdgeDevice's uid, and the EdgeDevice still exists with that uid. Absent
   * for a Node that is not an edge Node of this aranya, or not known yet.
   */
  ownerOf(node: string): EdgeDevice | undefined;
  /**
   * The EdgeDevice `namespace/name` when it owns the Node of its name (see
   * `ownerOf`): the only devices that may dial in and act for a Node.
   */
  ownedDevice(key: string): EdgeDevice | undefined;
  /** The uid of Node `node`'s virtual pod, as aranya recorded it on the Node. */
  virtualPodUid(node: string): string | undefined;
}

/**
 * What the EdgeDevice and Node watches tell the rest of aranya (every hook optional). Hooks run
 * on the watch's turn: they must be cheap and must not throw (a throw is logged and the others
 * still run); they are told of every device seen on every replica, not only this replica's share.
 */
export interface EdgeDeviceHooks {
  /** Told of every EdgeDevice seen (added, changed, relisted); idempotent. */
  onDevice?: DeviceHook;
  /** Told when an EdgeDevice is gone or being deleted; idempotent. */
  onDeviceRemoved?: DeviceRemovedHook;
  /** Told when a device's Node appeared (created, or recreated). */
  onNodeCreated?: DeviceRemovedHook;
  /** Told of every change of a device's Node (its status included). */
  onNodeChanged?: (namespace: string, name: string, node: V1Node) => void;
  /** Told the token of a credentials Secret this replica created. */
  onCredentials?: (device: string, uid: string, token: string) => void;
}

/** Options for {@link EdgeDeviceController}; its hooks are the first subscriber. */
export interface EdgeDeviceControllerOptions extends EdgeDeviceHooks {
  /** The transport the informers list and watch through. */
  http: KubeHttp;
  core: CoreApi;
  custom: CustomObjectsApi;
  coordination: CoordinationApi;
  /** Namespaces to watch; empty or absent: all namespaces. */
  namespaces?: string[];
  /** Where Events go (default: nowhere). */
  events?: EventRecorder;
  /**
   * This replica's share of the keys (default: all); see
   * replicas/membership.ts. Others' keys are not reconciled here.
   */
  owns?: (key: string) => boolean;
  workers?: number;
  /** Told the result of every reconcile (for metrics). */
  onReconcile?: (result: "success" | "error") => void;
  log?: Logger;
}

/** Watches EdgeDevices (and their Nodes) and reconciles them. */
export class EdgeDeviceController implements EdgeDirectory {
  readonly #o: EdgeDeviceControllerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly queue: WorkQueue;
  #devices: Cached<EdgeDevice>[] = [];
  #nodes?: Cached<V1Node>;
  /** The namespaces that have an EdgeDevice of each name (a Node event finds its devices). */
  readonly #namespacesOf = new Map<string, Set<string>>();
  readonly #hooks: EdgeDeviceHooks[];

  constructor(opts: EdgeDeviceControllerOptions) {
    this.#o = opts;
    this.#hooks = [opts];
    this.#log = opts.log ?? nullLogger;
    this.queue = new WorkQueue({
      workers: opts.workers ?? 64,
      onResult: opts.onReconcile,
      log: this.#log,
    });
  }

  /** Resolves once the first list completed and the watch runs. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  device(key: string): EdgeDevice | undefined {
    const slash = key.indexOf("/");
    const namespace = key.slice(0, slash);
    const name = key.slice(slash + 1);
    for (const i of this.#devices) {
      const ed = i.get(name, namespace);
      if (ed) return ed;
    }
    return undefined;
  }

  ownerOf(node: string): EdgeDevice | undefined {
    const n = this.#nodes?.get(node);
    const uid = n?.metadata?.annotations?.[ANNOTATION_OWNER_UID];
    const namespace = n?.metadata?.labels?.[LABEL_NAMESPACE];
    if (!uid || !namespace) return undefined;
    const ed = this.device(`${namespace}/${node}`);
    return ed?.metadata?.uid === uid ? ed : undefined;
  }

  ownedDevice(key: string): EdgeDevice | undefined {
    const slash = key.indexOf("/");
    const owner = this.ownerOf(key.slice(slash + 1));
    return owner?.metadata?.namespace === key.slice(0, slash) ? owner : undefined;
  }

  /** The edge Node `name` as cached (no I/O; shared: copy before changing it). */
  node(name: string): V1Node | undefined {
    return this.#nodes?.get(name);
  }

  virtualPodUid(node: string): string | undefined {
    return this.#nodes?.get(node)?.metadata?.annotations?.[ANNOTATION_VIRTUAL_POD_UID];
  }

  /**
   * Enqueues every device and orphaned edge Node again, or those whose key
   * `which` accepts (when this replica's share changed: the keys new to it).
   */
  resync(which: (key: string) => boolean = () => true): void {
    for (const i of this.#devices) {
      for (const ed of i.list()) {
        const key = `${ed.metadata?.namespace}/${ed.metadata?.name}`;
        if (which(key)) this.queue.add(key);
      }
    }
    for (const n of this.#nodes?.list() ?? []) this.#enqueueOrphan(n, which);
  }

  /** Enqueues the key of the EdgeDevice Node `node` was made for, when that one is gone. */
  #enqueueOrphan(node: V1Node, which: (key: string) => boolean = () => true): void {
    const name = node.metadata?.name;
    const namespace = node.metadata?.labels?.[LABEL_NAMESPACE];
    if (!name || !namespace || !node.metadata?.annotations?.[ANNOTATION_OWNER_UID]) return;
    // Devices of namespaces this aranya does not serve are another aranya's to clean up.
    const watched = this.#o.namespaces ?? [];
    if (watched.length && !watched.includes(namespace)) return;
    const key = `${namespace}/${name}`;
    if (this.ownerOf(name) === undefined && which(key)) this.queue.add(key);
  }

  /** Number of watches (EdgeDevices and Nodes; independent of the number of devices). */
  get watches(): number {
    return this.#devices.length + (this.#nodes ? 1 : 0);
  }

  /** Adds a subscriber to the hooks (call before `run`; the hooks are told in subscription order). */
  subscribe(hooks: EdgeDeviceHooks): void {
    this.#hooks.push(hooks);
  }

  /** Runs every subscriber's hook; a failure is logged and the others still run. */
  #hook(f: (h: EdgeDeviceHooks) => void): void {
    for (const h of this.#hooks) {
      try {
        f(h);
      } catch (err) {
        this.#log.warn("an edge device hook failed", { error: errorMessage(err) });
      }
    }
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const reconciler = new EdgeDeviceReconciler({
      core: this.#o.core,
      custom: this.#o.custom,
      coordination: this.#o.coordination,
      events: this.#o.events,
      cachedDevice: (key) => this.device(key),
      cachedNode: (name) => this.#nodes?.get(name),
      onCredentials: (device, uid, token) =>
        this.#hook((h) => h.onCredentials?.(device, uid, token)),
      log: this.#log,
    });
    const owns = this.#o.owns ?? (() => true);
    const namespaces = [...new Set(this.#o.namespaces ?? [])];
    this.#restarts = new WatchRestarts({ signal, log: this.#log });
    const informers = namespaces.length
      ? namespaces.map((ns) => this.#informer(ns))
      : [this.#informer()];
    this.#devices = informers;
    this.#nodes = this.#nodeInformer();
    await Promise.all([...informers, this.#nodes].map((i) => i.start()));
    this.#ready.resolve();
    this.#log.info("EdgeDevice controller running");
    // Relisted caches may hold Nodes whose EdgeDevice went while no aranya ran.
    for (const n of this.#nodes.list()) this.#enqueueOrphan(n);
    await this.queue.run(signal, async (key) => {
      if (owns(key)) await reconciler.reconcile(key);
    });
    await Promise.all([...informers, this.#nodes].map((i) => i.stop()));
  }

  /**
   * ONE informer on the edge Nodes (label arhat.dev/role=EdgeDevice): a change
   * or deletion enqueues every EdgeDevice of the Node's name (its owner, and
   * devices of other namespaces waiting for the name).
   */
  #nodeInformer(): Cached<V1Node> {
    const labelSelector = `${LABEL_ROLE}=EdgeDevice`;
    const informer = new Informer<V1Node>({
      http: this.#o.http,
      path: "/api/v1/nodes",
      labelSelector,
      log: this.#log,
    });
    const enqueue = (node: V1Node) => {
      const name = node.metadata?.name;
      if (!name) return;
      for (const ns of this.#namespacesOf.get(name) ?? []) this.queue.add(`${ns}/${name}`);
    };
    // A relist says "add" again for Nodes it already knew: only a new uid is a new Node.
    const uids = new Map<string, string>();
    informer.on("add", (node: V1Node) => {
      this.#enqueueOrphan(node);
      const name = node.metadata?.name, uid = node.metadata?.uid;
      const namespace = node.metadata?.labels?.[LABEL_NAMESPACE];
      if (!name || !uid || uids.get(name) === uid) return;
      uids.set(name, uid);
      if (namespace) this.#hook((h) => h.onNodeCreated?.(namespace, name));
    });
    // Status writes (the device's replica, the node lifecycle controller) change nothing the
    // reconciler converges: only a changed identity, metadata or taints enqueue the devices.
    const shapes = new Map<string, string>();
    const shape = (n: V1Node) =>
      JSON.stringify([
        n.metadata?.uid,
        n.metadata?.labels,
        n.metadata?.annotations,
        n.spec?.taints,
        n.metadata?.deletionTimestamp,
      ]);
    informer.on("add", (node: V1Node) => shapes.set(node.metadata?.name ?? "", shape(node)));
    informer.on("update", (node: V1Node) => {
      const namespace = node.metadata?.labels?.[LABEL_NAMESPACE];
      if (namespace && node.metadata?.name) {
        const name = node.metadata.name;
        this.#hook((h) => h.onNodeChanged?.(namespace, name, node));
      }
      const name = node.metadata?.name ?? "", now = shape(node);
      if (shapes.get(name) === now) return;
      shapes.set(name, now);
      enqueue(node);
      this.#enqueueOrphan(node);
    });
    informer.on("delete", (node: V1Node) => {
      shapes.delete(node.metadata?.name ?? "");
      if (uids.get(node.metadata?.name ?? "") === node.metadata?.uid) {
        uids.delete(node.metadata!.name!);
      }
      enqueue(node);
    });
    this.#restarts?.keep(informer, "Node");
    return informer;
  }

  /** An informer on EdgeDevices in `namespace` (all namespaces when absent) feeding the queue. */
  #informer(namespace?: string): Cached<EdgeDevice> {
    const path = namespace
      ? `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`
      : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    const informer = new Informer<EdgeDevice>({ http: this.#o.http, path, log: this.#log });
    // A status write (the device's replica) changes nothing the reconciler converges: only a new
    // generation (spec), uid, deletion or finalizers enqueue the key.
    const generations = new Map<string, string>();
    const seen = (ed: EdgeDevice) => {
      const namespace = ed.metadata?.namespace ?? "", name = ed.metadata?.name ?? "";
      const key = `${namespace}/${name}`;
      const set = this.#namespacesOf.get(name) ?? new Set<string>();
      this.#namespacesOf.set(name, set.add(namespace));
      const gen = JSON.stringify([
        ed.metadata?.uid,
        ed.metadata?.generation,
        ed.metadata?.deletionTimestamp,
        ed.metadata?.finalizers,
      ]);
      if (generations.get(key) !== gen) {
        generations.set(key, gen);
        this.queue.add(key);
      }
      if (ed.metadata?.deletionTimestamp) {
        this.#hook((h) => h.onDeviceRemoved?.(namespace, name));
      } else {
        this.#hook((h) => h.onDevice?.(ed));
      }
    };
    informer.on("add", seen);
    informer.on("update", seen);
    informer.on("delete", (ed: EdgeDevice) => {
      const namespace = ed.metadata?.namespace ?? "", name = ed.metadata?.name ?? "";
      generations.delete(`${namespace}/${name}`);
      const set = this.#namespacesOf.get(name);
      set?.delete(namespace);
      if (set?.size === 0) this.#namespacesOf.delete(name);
      this.queue.add(`${namespace}/${name}`);
      this.#hook((h) => h.onDeviceRemoved?.(namespace, name));
    });
    this.#restarts?.keep(informer, "EdgeDevice", { namespace: namespace ?? "" });
    return informer;
  }

  /** Restarts failed watches (set by `run`). */
  #restarts?: WatchRestarts;

  /**
   * False while a watch restarts after an error (the API server may refuse
   * one under load: 429): the caches may then trail the API for a while.
   */
  get caughtUp(): boolean {
    return this.#restarts?.caughtUp ?? true;
  }
}
