/**
 * Pods to devices, and their status back: the kubelet's pod work for every
 * edge node at once.
 *
 * ONE pod watch (per watched namespace, or one for all) with the field
 * selector `spec.nodeName!=` feeds a keyed work queue; the watch count does
 * not grow with devices. Connected devices `attach` their session. For each
 * pod key the reconciler re-reads the cached pod and converges:
 *
 * - a pod bound to a connected device is resolved (resolve.ts) and sent as
 *   CMD_POD_ENSURE unless the device already runs that spec (same spec hash,
 *   learned from its pod list or an earlier ensure): a changed spec is a new
 *   hash, which the device turns into delete + create;
 * - the device's pod status (replies and unsolicited MSG_POD_STATUS) becomes
 *   the pod's status (pod_status.ts), written only when it changed;
 * - a pod not sent yet is admitted first, as the kubelet admits it
 *   (admission.ts: pod count, cpu/memory requests, host ports against the
 *   node's other live pods); one that does not fit is marked Failed with the
 *   kubelet's reason (NodePorts, OutOfpods, ...) and never sent;
 * - a pod being deleted (deletionTimestamp) is stopped on the device with its
 *   grace period, written its terminal phase with the containers' ends
 *   (terminal_status.ts), then the object is removed with grace 0 (kubelet
 *   semantics); a pod that vanished from the API is deleted on the device;
 * - when a device attaches, its pod list is compared with the pods bound to
 *   its node: pods Kubernetes no longer has are removed on the device, pods
 *   already running with the same spec are left alone (no restarts after a
 *   reconnect), everything else is enqueued.
 *
 * A pod whose references cannot be resolved keeps a waiting status with
 * reason CreateContainerConfigError naming the field, and is retried with
 * back-off.
 *
 * Running pods, as the kubelet keeps them (docs/aranya.md, "Pods"):
 *
 * - volumes follow their sources: ConfigMap, Secret, downwardAPI and projected
 *   volumes are resolved again every `syncIntervalMs` (and at once when the
 *   pod's own labels or annotations change), and when the digest of the
 *   resolved files differs from what the device holds the pod is sent again
 *   with the same spec hash: the device rewrites the files in place, nothing
 *   restarts. Nothing is sent when nothing changed. Env is not updated in
 *   running containers (the device uses the new values only for containers it
 *   creates later, as the kubelet resolves env at container start);
 * - projected service account tokens are cached per pod and requested again
 *   at 80% of their lifetime or after 24 hours (token_cache.ts);
 * - a pod active longer than spec.activeDeadlineSeconds (since
 *   status.startTime) is stopped on the device and marked Failed, reason
 *   DeadlineExceeded (active_deadline.ts).
 *
 * Why periodic re-resolution and not watches on ConfigMaps and Secrets: a
 * watch per referenced object (the kubelet's way) would be tens of thousands
 * of long-lived requests from this one process at 1000 devices, and a watch
 * per namespace needs list/watch on every Secret of the namespace (which the
 * RBAC deliberately does not grant: Secrets are read by name only) and holds
 * all of them in memory. Re-reading by name costs at most one GET per
 * referenced object per `syncIntervalMs`, fewer when pods share objects (one
 * read serves every pod using it for `sourceCacheMs`, source_cache.ts), spread
 * over time because each pod keeps its own schedule (one timer scans them
 * all, kube/due_set.ts), and no device traffic unless something changed. At
 * 1000 devices with 10 pods each, each pod with its own ConfigMap and Secret,
 * that is about 330 GET/s at the default minute: large fleets raise the
 * interval (config pods.syncInterval). The pod's own metadata comes through the
 * pod watch, so downward API labels and annotations propagate at once.
 *
 * Tenancy: a device runs only pods of its EdgeDevice's namespace, plus the
 * namespaces its `spec.pod.allowedNamespaces` lists and those whose labels
 * match its `spec.pod.allowedNamespaceSelector` (ONE Namespace watch keeps
 * their labels; a relabelled namespace or a changed rule re-checks the pods
 * at once, edgedevice/tenancy.ts). Any other pod bound to its
 * Node is refused the way a kubelet refuses a pod it cannot admit: phase
 * Failed with reason NamespaceNotAllowed and a message naming the rule; it is
 * never sent to the device (and is stopped there if the rule changed while it
 * ran). The virtual pod is the pod `<namespace>/<device>` whose uid the
 * device's Node records (annotation aranya.arhat.dev/virtual-pod-uid, which
 * only aranya writes; never a label); it is left to the device
 * session, and a pod of that name with another uid is a look-alike that is
 * never sent to the device either.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { V1Namespace, V1Pod, V1Service } from "@kubernetes/client-node";
import type { CoreApi } from "../kube/apis.ts";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { errorMessage, isKind } from "@aranya/common/errors";
import { stableJson } from "@aranya/common/stable_json";
import { readySignal } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";
import type { Reply, SessionClient } from "@aranya/common/session/session_client";
import {
  PodDeleteCmdSchema,
  PodEnsureCmdSchema,
  PodListCmdSchema,
  PodStatusListMsgSchema,
  type PodStatusMsg,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { EdgeDirectory } from "../edgedevice/controller.ts";
import { namespaceRefusal, tenancyKey } from "../edgedevice/tenancy.ts";
import type { EdgeDevice } from "../edgedevice/types.ts";
import { DueSet } from "../kube/due_set.ts";
import { fromApiError, isNotFound } from "../kube/errors.ts";
import { WorkQueue } from "../kube/work_queue.ts";
import { Informer } from "../kube/informer.ts";
import { type KubeHttp, PATCH } from "../kube/kube_http.ts";
import { WatchRestarts } from "../kube/watch_restarts.ts";
import {
  activeDeadlineAt,
  deadlineExceededStatus,
  isDeadlineExceeded,
  MESSAGE_DEADLINE_EXCEEDED,
  REASON_DEADLINE_EXCEEDED,
} from "../pods/active_deadline.ts";
import { admission, REJECTED_PREFIX, type Rejection } from "../pods/admission.ts";
import { podStatusFrom, type PodStatusJson, statusChanged } from "../pods/pod_status.ts";
import { containerEvents } from "../pods/container_events.ts";
import { PodConfigError, type PodSources, podSpecHash, resolvePod } from "../pods/resolve.ts";
import { SourceCache } from "../pods/source_cache.ts";
import { terminatedPodStatus } from "../pods/terminal_status.ts";
import { TokenCache } from "../pods/token_cache.ts";
import { volumeDigest } from "../pods/volume_digest.ts";
import type { KubeletBackend } from "../kubelet/kubelet_server.ts";

/** Reason of a pod refused by the tenancy rule (phase Failed). */
export const REASON_NOT_ALLOWED = "NamespaceNotAllowed";

/** Options for {@link PodController}. */
export interface PodControllerOptions {
  http: KubeHttp;
  core: CoreApi;
  /** Which EdgeDevice owns a Node (tenancy and the virtual pod come from it). */
  directory: EdgeDirectory;
  /**
   * This replica's share of the devices (replicas/membership.ts; default:
   * all): pods of a device attached nowhere here are refused only by the
   * replica whose share it is.
   */
  owns?: (deviceKey: string) => boolean;
  /** Namespaces whose pods are watched; empty or absent: all. */
  namespaces?: string[];
  /** Address advertised for every edge node (pods' hostIP). */
  kubeletAddress: string;
  workers?: number;
  /** Longest wait for a device's reply to ensure/list, ms (default 60 s). */
  requestTimeoutMs?: number;
  /**
   * How often a running pod's volume sources are resolved again, ms (default
   * 60 s, the kubelet's syncFrequency).
   */
  syncIntervalMs?: number;
  /**
   * How long one read of a Secret or ConfigMap is shared between the pods
   * that use it, ms (default: a sixth of syncIntervalMs, at most 10 s).
   */
  sourceCacheMs?: number;
  /** How often due work (volume checks, token refreshes, deadlines) is looked for, ms (default 1 s). */
  tickMs?: number;
  /** Clock, ms since the epoch (default Date.now); injectable for tests. */
  now?: () => number;
  /** Called after each pod sync, for metrics. */
  onSync?: (result: "ok" | "error") => void;
  /** Records a Kubernetes Event for a pod (optional). */
  recordEvent?: (pod: V1Pod, type: "Normal" | "Warning", reason: string, message: string) => void;
  log?: Logger;
}

/** A connected device, as the pod controller needs it. */
export interface AttachedDevice {
  /** The device: "<namespace>/<name>" of its EdgeDevice. */
  device: string;
  /** Node name (= device name); the caller checked that the EdgeDevice owns it. */
  node: string;
  client: SessionClient;
  /** Settles when the link closed. */
  closed: Promise<unknown>;
}

interface DeviceState {
  device: AttachedDevice;
  /** Latest status per pod uid as the device reported it. */
  statuses: Map<string, PodStatusMsg>;
  /** Spec hash the device runs per uid (sent, or learned from its list). */
  running: Map<string, string>;
  /** Resolves once the device's pod list was compared (orphans removed). */
  synced: Promise<void>;
  runtime?: string;
  allocatable?: Record<string, string>;
}

/** What the controller keeps about a pod it sent to a device (by uid). */
interface PodState {
  /** Digest of the volume files the device holds (sent or confirmed); unknown after a restart. */
  digest?: string;
  /** The pod's labels and annotations at the last resolution (downward API). */
  meta?: string;
  /** When the volume sources are resolved again (ms). */
  nextSync: number;
  /** Stopped for its active deadline: never sent again. */
  deadlineExceeded?: boolean;
}

/**
 * Syncs pods bound to edge nodes with their devices. It is also the kubelet API's
 * {@link KubeletBackend} (the pods and device sessions that API serves come from here).
 */
export class PodController implements KubeletBackend {
  readonly #o: PodControllerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly queue: WorkQueue;
  readonly #devices = new Map<string, DeviceState>();
  /** Pod key -> uid and node, for pods seen bound to a node. */
  readonly #known = new Map<string, { uid: string; node: string }>();
  /** Node -> pod keys. */
  readonly #byNode = new Map<string, Set<string>>();
  readonly #caches: Informer<V1Pod>[] = [];
  #namespaces?: Informer<V1Namespace>;
  /** Pod uid -> what was sent for it. */
  readonly #pods = new Map<string, PodState>();
  /** Uids of deleted pods whose terminal status was written (until they leave the API). */
  readonly #terminated = new Set<string>();
  /** Pod keys with work due later (volume checks, token refreshes, deadlines). */
  readonly #due = new DueSet();
  /** Node -> the tenancy rule of its EdgeDevice when last seen (tenancy.ts). */
  readonly #rules = new Map<string, string>();
  readonly #tokens: TokenCache;
  readonly #objects: SourceCache;
  readonly #now: () => number;
  readonly #syncMs: number;

  constructor(opts: PodControllerOptions) {
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({ controller: "pods" });
    // Workers mostly wait on the API server and devices: many at once hide that latency.
    this.queue = new WorkQueue({ workers: opts.workers ?? 16, log: this.#log });
    this.#now = opts.now ?? Date.now;
    this.#syncMs = opts.syncIntervalMs ?? 60_000;
    this.#tokens = new TokenCache({ mint: (req) => this.#mintToken(req), now: this.#now });
    this.#objects = new SourceCache({
      sources: this.#sources,
      ttlMs: opts.sourceCacheMs ?? Math.min(10_000, this.#syncMs / 6),
      now: this.#now,
    });
  }

  /** Resolves once every pod watch listed and runs. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Number of watches: pods (one, or one per watched namespace) and Namespaces (one). */
  get watches(): number {
    return this.#caches.length + (this.#namespaces ? 1 : 0);
  }

  /** Service account tokens requested so far (TokenRequest), for tests and metrics. */
  get tokensRequested(): number {
    return this.#tokens.minted;
  }

  /**
   * Told about every EdgeDevice the controller reconciled: when its tenancy
   * rule changed, the pods bound to its Node are checked again at once.
   */
  deviceChanged(ed: EdgeDevice): void {
    const node = ed.metadata?.name;
    if (!node) return;
    const rule = tenancyKey(ed);
    const before = this.#rules.get(node);
    this.#rules.set(node, rule);
    if (before === undefined || before === rule) return;
    for (const key of this.#byNode.get(node) ?? []) this.queue.add(key);
  }

  /**
   * Takes over pod work for a connected device until `device.closed`
   * settles. Its pod list is compared first (orphans removed on the device);
   * then every pod bound to its node is enqueued. Never throws; a later
   * attach of the same node replaces this one.
   */
  attach(device: AttachedDevice): void {
    const state: DeviceState = {
      device,
      statuses: new Map(),
      running: new Map(),
      synced: Promise.resolve(),
    };
    this.#devices.set(device.node, state);
    device.client.onUnsolicited((reply) => this.#onDeviceMessage(state, reply));
    state.synced = this.#syncDevice(state).catch((err) => {
      this.#log.warn("comparing the device's pod list failed", {
        node: device.node,
        error: errorMessage(err),
      });
    });
    device.closed.finally(() => {
      if (this.#devices.get(device.node) === state) this.#devices.delete(device.node);
    });
  }

  /** Runs the pod watches and the workers until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const namespaces = this.#o.namespaces?.length ? this.#o.namespaces : [undefined];
    const restarts = new WatchRestarts({ signal, log: this.#log });
    for (const ns of namespaces) {
      const path = ns ? `/api/v1/namespaces/${ns}/pods` : "/api/v1/pods";
      const cache = new Informer<V1Pod>({
        http: this.#o.http,
        path,
        fieldSelector: "spec.nodeName!=",
        log: this.#log,
      });
      const onChange = (pod: V1Pod) => this.#observe(pod);
      cache.on("add", onChange);
      cache.on("update", onChange);
      cache.on("delete", onChange);
      restarts.keep(cache, "pod");
      this.#caches.push(cache);
    }
    // ONE Namespace watch: the labels spec.pod.allowedNamespaceSelector matches. A namespace
    // relabelled re-checks the pods of that namespace on edge nodes.
    const nsCache = new Informer<V1Namespace>({
      http: this.#o.http,
      path: "/api/v1/namespaces",
      log: this.#log,
    });
    const onNamespace = (n: V1Namespace) => {
      const name = n.metadata?.name;
      for (const key of this.#known.keys()) {
        if (key.slice(0, key.indexOf("/")) === name) this.queue.add(key);
      }
    };
    nsCache.on("add", onNamespace);
    nsCache.on("update", onNamespace);
    restarts.keep(nsCache, "Namespace");
    this.#namespaces = nsCache;
    await Promise.all([...this.#caches.map((c) => c.start()), nsCache.start()]);
    this.#ready.resolve();
    this.#log.info("pod controller running", { watches: this.watches });
    const tick = setInterval(() => {
      for (const key of this.#due.take(this.#now())) this.queue.add(key);
    }, this.#o.tickMs ?? 1000);
    try {
      await this.queue.run(signal, (key) => this.#reconcile(key));
    } finally {
      clearInterval(tick);
    }
    await Promise.all([...this.#caches.map((c) => c.stop()), nsCache.stop()]);
  }

  #observe(pod: V1Pod): void {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const node = pod.spec?.nodeName;
    if (!node) return;
    // The virtual pod stands for the device itself; the device session owns it. Nothing runs
    // for it on the device, so a deletion (namespace deleted, or by hand) completes at once:
    // no kubelet would ever finish it, and a namespace's other objects wait for its pods.
    if (this.isVirtualPod(pod)) {
      if (pod.metadata?.deletionTimestamp) void this.#removeVirtualPod(pod);
      return;
    }
    // The virtual pod before its EdgeDevice's status named its uid: neither sent nor refused.
    if (this.#virtualKind(pod) === "pending") return;
    const prev = this.#known.get(key);
    // A pod replacing another under the same key keeps the old uid recorded until reconcile
    // has removed the old one from its device.
    if (!prev) this.#known.set(key, { uid: pod.metadata?.uid ?? "", node });
    let keys = this.#byNode.get(node);
    if (!keys) this.#byNode.set(node, keys = new Set());
    keys.add(key);
    if (
      this.#devices.has(node) || (prev && this.#devices.has(prev.node)) ||
      this.refusal(pod) !== undefined
    ) this.queue.add(key);
  }

  /**
   * True when `pod` is its node's virtual pod: `<namespace>/<name>` of the
   * EdgeDevice that owns the node, with the uid the node records.
   */
  isVirtualPod(pod: V1Pod): boolean {
    return this.#virtualKind(pod) === "virtual";
  }

  /**
   * For a pod with the namespace and name of its node's virtual pod: "virtual"
   * (the uid the Node records), "pending" (no uid recorded yet: the cache may
   * trail the Node) or "look-alike". Undefined for other pods.
   */
  #virtualKind(pod: V1Pod): "virtual" | "pending" | "look-alike" | undefined {
    const owner = this.#o.directory.ownerOf(pod.spec?.nodeName ?? "");
    if (
      !owner || pod.metadata?.namespace !== owner.metadata?.namespace ||
      pod.metadata?.name !== owner.metadata?.name
    ) return undefined;
    const uid = this.#o.directory.virtualPodUid(pod.spec!.nodeName!);
    return uid === undefined ? "pending" : uid === pod.metadata?.uid ? "virtual" : "look-alike";
  }

  /**
   * Why `pod` may not run on the device of its node (undefined: it may, or
   * the node is not an edge node of this aranya). Reads caches only.
   */
  refusal(pod: V1Pod): string | undefined {
    const node = pod.spec?.nodeName ?? "";
    const owner = this.#o.directory.ownerOf(node);
    if (!owner) return undefined;
    const ns = pod.metadata?.namespace ?? "";
    const own = owner.metadata?.namespace ?? "";
    const device = `${own}/${owner.metadata?.name}`;
    const virtual = this.#virtualKind(pod);
    if (virtual === "look-alike") {
      return `Pod "${ns}/${pod.metadata?.name}" has the name of the virtual pod of EdgeDevice "${device}" but is not the one aranya created; it never runs on the device`;
    }
    if (virtual !== undefined) return undefined;
    return namespaceRefusal(
      owner,
      { namespace: ns, name: pod.metadata?.name ?? "", node },
      this.#namespaces?.get(ns)?.metadata?.labels,
    );
  }

  async #removeVirtualPod(pod: V1Pod): Promise<void> {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    try {
      await this.#finishDeletion(pod, "the deleted virtual pod");
      this.#log.info("virtual pod removed", { pod: key });
    } catch (err) {
      this.#log.warn("removing the deleted virtual pod failed", {
        pod: key,
        error: errorMessage(err),
      });
    }
  }

  /**
   * Removes the pod object at once (grace 0, its uid as a precondition), as a
   * kubelet does once nothing runs for it; gone or replaced meanwhile is fine.
   * Throws the domain error naming `what` otherwise.
   */
  async #finishDeletion(pod: V1Pod, what: string): Promise<void> {
    const { name, namespace, uid } = pod.metadata!;
    try {
      await this.#o.core.deleteNamespacedPod({
        name: name!,
        namespace: namespace!,
        // In the body: the API server reads delete options from the body when there is one.
        body: { gracePeriodSeconds: 0, preconditions: { uid } },
      });
    } catch (err) {
      if (!isNotFound(err) && fromApiError("", err).kind !== "already-exists") {
        throw fromApiError(`Removing ${what} "${namespace}/${name}"`, err);
      }
    }
  }

  /** The cached pod `namespace/name` bound to a node (virtual pods included), if any. */
  pod(namespace: string, name: string): V1Pod | undefined {
    return this.#cached(`${namespace}/${name}`);
  }

  /** The cached pods bound to `node`. */
  podsOn(node: string): V1Pod[] {
    const keys = this.#byNode.get(node) ?? new Set<string>();
    return [...keys].map((k) => this.#cached(k)).filter((p): p is V1Pod =>
      p?.spec?.nodeName === node
    );
  }

  /** The session of the device serving `node`, while it is attached. */
  device(node: string): SessionClient | undefined {
    return this.#devices.get(node)?.device.client;
  }

  #cached(key: string): V1Pod | undefined {
    const [namespace, name] = key.split("/") as [string, string];
    for (const c of this.#caches) {
      const p = c.get(name, namespace);
      if (p) return p;
    }
    return undefined;
  }

  async #reconcile(key: string): Promise<void> {
    try {
      await this.#reconcileKey(key);
      this.#o.onSync?.("ok");
    } catch (err) {
      this.#o.onSync?.("error");
      throw err;
    }
  }

  async #reconcileKey(key: string): Promise<void> {
    const pod = this.#cached(key);
    const known = this.#known.get(key);
    if (known && (!pod || pod.metadata?.uid !== known.uid)) {
      // The pod we ran under this key is gone from the API: remove it on the device.
      const dev = this.#devices.get(known.node);
      if (dev) {
        await dev.synced;
        await this.#deleteOnDevice(dev, known.uid, 0);
      }
      if (dev || !pod) {
        this.#known.delete(key);
        this.#byNode.get(known.node)?.delete(key);
        this.#forget(known.uid, key);
        this.#terminated.delete(known.uid);
      }
      if (!pod) return;
    }
    if (!pod) return;
    const uid = pod.metadata!.uid!;
    const node = pod.spec!.nodeName!;
    this.#known.set(key, { uid, node });
    const virtual = this.#virtualKind(pod);
    if (virtual === "virtual" || virtual === "pending") return;
    let refused = this.refusal(pod);
    if (refused !== undefined && pod.status?.phase !== "Failed") {
      refused = await this.#confirmRefusal(pod, refused);
    }
    let dev = this.#devices.get(node);
    const owner = this.#o.directory.ownerOf(node);
    // Only the device of the EdgeDevice that owns the node is ever told about its pods.
    if (dev && dev.device.device !== `${owner?.metadata?.namespace}/${owner?.metadata?.name}`) {
      dev = undefined;
    }
    if (refused !== undefined) {
      // A device served by another replica: that one refuses it (or this one, if it is this
      // replica's share while the device is offline).
      const key = `${owner?.metadata?.namespace}/${owner?.metadata?.name}`;
      if (dev || (this.#o.owns?.(key) ?? true)) await this.#refuse(pod, dev, refused);
      return;
    }
    if (!dev) return; // not an edge node, or its device is offline: nothing to do now
    await dev.synced;
    const log = this.#log.with({ pod: key, node });

    if (pod.metadata?.deletionTimestamp) {
      await this.#terminate(pod, dev, log);
      this.#forget(uid, key);
      return;
    }
    const phase = pod.status?.phase;
    if ((phase === "Succeeded" || phase === "Failed") && !dev.statuses.has(uid)) {
      this.#forget(uid, key); // finished and not on the device: nothing more is sent for it
      return;
    }
    if (!this.#admitted(pod, dev)) {
      const rejected = admission(this.#live(node, dev), {
        admitted: (p) => this.#admitted(p, dev!),
        allocatable: await this.#allocatable(dev),
      }).get(uid);
      if (rejected) {
        await this.#reject(pod, rejected);
        return;
      }
    }

    const now = this.#now();
    const st = this.#state(uid);
    const deadline = activeDeadlineAt(pod);
    if (st.deadlineExceeded || (deadline !== undefined && now >= deadline)) {
      await this.#stopForDeadline(pod, dev, st);
      return;
    }
    if (deadline !== undefined) this.#due.schedule(key, deadline);

    const hash = podSpecHash(pod);
    const sent = dev.running.get(uid) === hash;
    const meta = stableJson([pod.metadata?.labels ?? {}, pod.metadata?.annotations ?? {}]);
    const tokenDue = (this.#tokens.nextRefresh(uid) ?? Infinity) <= now;
    // Ephemeral containers (kubectl debug) join a running pod: sent at once, same spec hash.
    const ephemeral = (pod.spec?.ephemeralContainers ?? []).map((c) => c.name).join(",");
    if (
      !sent || now >= st.nextSync || tokenDue || (st.meta !== undefined && st.meta !== meta) ||
      (st.digest !== undefined && !st.digest.endsWith(`|${ephemeral}`))
    ) {
      await this.#sync(pod, dev, st, { sent, hash, meta, now, log });
    }
    this.#due.schedule(key, Math.min(st.nextSync, this.#tokens.nextRefresh(uid) ?? Infinity));
    const status = dev.statuses.get(uid);
    if (status) await this.#writeStatus(pod, podStatusFrom(status, pod, await this.#ctx(dev)));
  }

  /**
   * Resolves `pod` and sends it when the device does not run this spec yet,
   * or runs it with other volume contents (same spec hash: the device
   * rewrites the files, nothing restarts). A running pod whose sources cannot
   * be resolved now keeps what it has (as the kubelet keeps mounted files),
   * with a Warning FailedMount Event, and is tried again at its next sync.
   */
  async #sync(
    pod: V1Pod,
    dev: DeviceState,
    st: PodState,
    o: { sent: boolean; hash: string; meta: string; now: number; log: Logger },
  ): Promise<void> {
    const uid = pod.metadata!.uid!;
    const owner = this.#o.directory.ownerOf(dev.device.node);
    let tokenFailed = false;
    const objects = this.#objects.view(!o.sent);
    const problems: string[] = [];
    let cmd;
    try {
      cmd = await resolvePod(pod, {
        sources: {
          ...objects,
          // A pod's first send sees the Services that exist now (the kubelet's rule: those
          // present when the container starts); later refreshes may share a recent list.
          services: (namespace) => this.#servicesOf(namespace, !o.sent),
          serviceAccountToken: async (req) => {
            try {
              return await this.#tokens.get(req);
            } catch (err) {
              tokenFailed = true;
              throw err;
            }
          },
        },
        hostIP: this.#o.kubeletAddress,
        allocatable: await this.#allocatable(dev),
        dns: owner?.spec?.pod?.dns,
        warn: (m) => problems.push(m),
      });
    } catch (err) {
      if (!o.sent) {
        if (err instanceof PodConfigError) {
          await this.#writeConfigError(pod, dev, err.message);
          this.#o.recordEvent?.(pod, "Warning", "Failed", `Error: ${err.message}`);
        }
        throw err;
      }
      st.nextSync = o.now + this.#syncMs;
      o.log.warn("updating the pod's volumes failed; the device keeps the current files", {
        error: errorMessage(err),
      });
      this.#o.recordEvent?.(pod, "Warning", "FailedMount", errorMessage(err));
      return;
    } finally {
      // Warnings are told (and recorded as Events) when the pod is sent, not on every sync.
      for (const m of problems) {
        if (!o.sent || st.meta === undefined) {
          o.log.warn("pod resolution", { problem: m });
          this.#o.recordEvent?.(pod, "Warning", "FailedResolve", m);
        } else {
          o.log.debug("pod resolution", { problem: m });
        }
      }
    }
    const digest = `${volumeDigest(cmd)}|${cmd.ephemeralContainers.map((c) => c.name).join(",")}`;
    st.nextSync = o.now + this.#syncMs;
    // A token that could not be had now never replaces the one a running pod holds.
    if (o.sent && (digest === st.digest || tokenFailed)) {
      st.meta = o.meta;
      return;
    }
    const reply = await dev.device.client.request(
      CmdKind.CMD_POD_ENSURE,
      toBinary(PodEnsureCmdSchema, cmd),
      { timeoutMs: this.#o.requestTimeoutMs ?? 60_000 },
    );
    const status = fromBinary(PodStatusMsgSchema, reply.payload);
    dev.statuses.set(uid, status);
    dev.running.set(uid, o.hash);
    st.digest = digest;
    st.meta = o.meta;
    if (o.sent) o.log.info("pod volumes updated on the device", { specHash: o.hash });
    else o.log.info("pod sent to the device", { specHash: o.hash });
  }

  #state(uid: string): PodState {
    let st = this.#pods.get(uid);
    if (!st) {
      // A pod first seen running (adopted from the device's list after a restart of aranya):
      // its volumes are checked once within the interval, spread so a restart is no burst.
      st = { nextSync: this.#now() + Math.floor(Math.random() * this.#syncMs) };
      this.#pods.set(uid, st);
    }
    return st;
  }

  /** Forgets what was kept for a pod that is gone (its tokens too). */
  #forget(uid: string, key: string): void {
    this.#pods.delete(uid);
    this.#tokens.forget(uid);
    this.#due.delete(key);
  }

  /**
   * A deleted pod, as the kubelet ends it: its containers are stopped on the
   * device with the pod's grace period, the terminal status is written (phase
   * Succeeded or Failed with the containers' terminated states,
   * terminal_status.ts), then the object is removed with grace 0. A pod held
   * by a finalizer stays until its owner removes it, which it may wait for
   * the terminal phase to do (the Job controller does).
   */
  async #terminate(pod: V1Pod, dev: DeviceState, log: Logger): Promise<void> {
    const uid = pod.metadata!.uid!;
    const done = this.#terminated.has(uid);
    const last = dev.statuses.get(uid);
    let stopped: PodStatusMsg | undefined;
    if (!done || dev.running.has(uid) || last) {
      stopped = await this.#deleteOnDevice(
        dev,
        uid,
        pod.metadata?.deletionGracePeriodSeconds ?? 30,
      );
      log.info("pod deleted on the device");
    }
    const phase = pod.status?.phase;
    if (!done && phase !== "Succeeded" && phase !== "Failed") {
      // The device's report after stopping; the last one before it when the device no longer
      // had the pod (an earlier attempt removed it).
      const msg = stopped?.containers.length ? stopped : last ?? stopped!;
      await this.#writeStatus(pod, terminatedPodStatus(msg, pod, await this.#ctx(dev)));
    }
    this.#terminated.add(uid);
    if (!done || pod.metadata?.deletionGracePeriodSeconds !== 0) {
      await this.#finishDeletion(pod, "the deleted pod");
    }
  }

  /**
   * True when the node admitted `pod`: its device runs it or was sent it, or
   * its status shows it started (status.startTime, which only the node
   * writes), or it is the virtual pod (the device itself).
   */
  #admitted(pod: V1Pod, dev: DeviceState): boolean {
    const uid = pod.metadata?.uid ?? "";
    return this.#virtualKind(pod) === "virtual" || this.#virtualKind(pod) === "pending" ||
      dev.running.has(uid) || dev.statuses.has(uid) || this.#pods.has(uid) ||
      Boolean(pod.status?.startTime) || pod.status?.phase === "Running";
  }

  /**
   * The pods of `node` that hold or ask for its resources and host ports:
   * not in a terminal phase, not refused by the tenancy rule, and, when
   * deleted, only those the node admitted.
   */
  #live(node: string, dev: DeviceState): V1Pod[] {
    return this.podsOn(node).filter((p) => {
      const phase = p.status?.phase;
      if (phase === "Succeeded" || phase === "Failed") return false;
      if (this.refusal(p) !== undefined) return false;
      return !p.metadata?.deletionTimestamp || this.#admitted(p, dev);
    });
  }

  /**
   * A pod the node does not admit (admission.ts): marked Failed with the
   * kubelet's reason and "Pod was rejected: ..." message, and a Warning Event;
   * it is never sent to the device.
   */
  async #reject(pod: V1Pod, r: Rejection): Promise<void> {
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    const message = REJECTED_PREFIX + r.message;
    try {
      await this.#o.core.patchNamespacedPodStatus(
        {
          name: pod.metadata!.name!,
          namespace: pod.metadata!.namespace!,
          body: { status: { phase: "Failed", reason: r.reason, message } },
        },
        { contentType: PATCH.merge },
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw fromApiError(`Rejecting pod "${key}"`, err);
    }
    this.#log.warn("pod rejected", { pod: key, reason: r.reason, message });
    this.#o.recordEvent?.(pod, "Warning", r.reason, r.message);
  }

  /**
   * spec.activeDeadlineSeconds passed: the pod is stopped on the device (its
   * grace period) and marked Failed, reason DeadlineExceeded, as the kubelet
   * does; it is never sent again.
   */
  async #stopForDeadline(pod: V1Pod, dev: DeviceState, st: PodState): Promise<void> {
    const uid = pod.metadata!.uid!;
    const key = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    st.deadlineExceeded = true;
    this.#due.delete(key);
    if (dev.running.has(uid) || dev.statuses.has(uid)) {
      await this.#deleteOnDevice(dev, uid, pod.spec?.terminationGracePeriodSeconds ?? 30);
    }
    this.#tokens.forget(uid);
    if (isDeadlineExceeded(pod)) return;
    const now = new Date(this.#now()).toISOString().replace(/\.\d+Z$/, "Z");
    try {
      await this.#o.core.patchNamespacedPodStatus(
        {
          name: pod.metadata!.name!,
          namespace: pod.metadata!.namespace!,
          body: { status: deadlineExceededStatus(pod, now) },
        },
        { contentType: PATCH.merge },
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw fromApiError(`Marking pod "${key}" failed for its active deadline`, err);
    }
    this.#log.info("pod stopped: active deadline exceeded", { pod: key });
    this.#o.recordEvent?.(pod, "Normal", REASON_DEADLINE_EXCEEDED, MESSAGE_DEADLINE_EXCEEDED);
  }

  /**
   * A refusal is final (phase Failed), so when the namespace selector decided
   * it, the Namespace is read from the API first: the Namespace watch may
   * trail the pod watch (a namespace created or labelled a moment before its
   * pods). Returns the refusal with the Namespace's current labels.
   */
  async #confirmRefusal(pod: V1Pod, refused: string): Promise<string | undefined> {
    const owner = this.#o.directory.ownerOf(pod.spec?.nodeName ?? "");
    const ns = pod.metadata?.namespace ?? "";
    if (!owner?.spec?.pod?.allowedNamespaceSelector || this.#virtualKind(pod) !== undefined) {
      return refused;
    }
    let labels: Record<string, string> | undefined;
    try {
      labels = (await this.#o.core.readNamespace({ name: ns })).metadata?.labels;
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Namespace "${ns}"`, err);
    }
    return namespaceRefusal(
      owner,
      { namespace: ns, name: pod.metadata?.name ?? "", node: pod.spec?.nodeName ?? "" },
      labels,
    );
  }

  /**
   * A pod the device may not run: stopped there if it ran, then marked Failed
   * (reason NamespaceNotAllowed) as a kubelet marks a pod it cannot admit; once
   * deleted it is removed at once (nothing runs for it).
   */
  async #refuse(pod: V1Pod, dev: DeviceState | undefined, message: string): Promise<void> {
    const uid = pod.metadata!.uid!;
    if (dev?.running.has(uid) || dev?.statuses.has(uid)) {
      await dev.synced;
      await this.#deleteOnDevice(dev, uid, 0);
    }
    const ref = { name: pod.metadata!.name!, namespace: pod.metadata!.namespace! };
    const phase = pod.status?.phase;
    const deleting = pod.metadata?.deletionTimestamp !== undefined &&
      pod.metadata.deletionTimestamp !== null;
    // A deleted pod leaves with a terminal phase (finalizers may wait for one).
    if (deleting && (phase === "Failed" || phase === "Succeeded")) {
      return await this.#finishDeletion(pod, "the refused pod");
    }
    if (
      phase === "Failed" && pod.status?.reason === REASON_NOT_ALLOWED &&
      pod.status.message === message
    ) return;
    try {
      await this.#o.core.patchNamespacedPodStatus(
        {
          ...ref,
          body: { status: { phase: "Failed", reason: REASON_NOT_ALLOWED, message } },
        },
        { contentType: PATCH.merge },
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw fromApiError(`Refusing pod "${ref.namespace}/${ref.name}"`, err);
    }
    this.#log.warn("pod refused", { pod: `${ref.namespace}/${ref.name}`, reason: message });
    this.#o.recordEvent?.(pod, "Warning", REASON_NOT_ALLOWED, message);
    if (deleting) await this.#finishDeletion(pod, "the refused pod");
  }

  /**
   * Reads Secrets and ConfigMaps for pod resolution (by name only; shared for
   * a few seconds through `#objects`, never listed or watched).
   */
  readonly #sources: Pick<PodSources, "secret" | "configMap"> = {
    secret: async (namespace, name) => {
      try {
        return await this.#o.core.readNamespacedSecret({ name, namespace });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw fromApiError(`Reading Secret "${namespace}/${name}"`, err);
      }
    },
    configMap: async (namespace, name) => {
      try {
        return await this.#o.core.readNamespacedConfigMap({ name, namespace });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw fromApiError(`Reading ConfigMap "${namespace}/${name}"`, err);
      }
    },
  };

  /**
   * The Services of a namespace, for the pods' service environment variables:
   * one list shared for 10 s by the refreshes of running pods; `fresh` (a
   * pod's first send) reads it anew.
   */
  #servicesOf(namespace: string, fresh: boolean): Promise<V1Service[]> {
    const now = this.#now();
    const hit = this.#serviceLists.get(namespace);
    if (hit && !fresh && now - hit.at < 10_000) return hit.value;
    const value = this.#o.core.listNamespacedService({ namespace }).then(
      (l) => l.items,
      (err) => {
        this.#serviceLists.delete(namespace);
        throw fromApiError(`Listing the Services of namespace "${namespace}"`, err);
      },
    );
    this.#serviceLists.set(namespace, { at: now, value });
    if (this.#serviceLists.size > 1000) {
      for (const [k, e] of this.#serviceLists) {
        if (now - e.at >= 10_000) this.#serviceLists.delete(k);
      }
    }
    return value;
  }

  readonly #serviceLists = new Map<string, { at: number; value: Promise<V1Service[]> }>();

  /** A TokenRequest bound to the pod (cached per pod by `#tokens`). */
  async #mintToken(
    req: Parameters<PodSources["serviceAccountToken"]>[0],
  ): Promise<{ token: string; ttlSeconds?: number }> {
    try {
      const r = await this.#o.core.createNamespacedServiceAccountToken({
        name: req.serviceAccount,
        namespace: req.namespace,
        body: {
          spec: {
            audiences: req.audiences,
            expirationSeconds: req.expirationSeconds,
            boundObjectRef: {
              apiVersion: "v1",
              kind: "Pod",
              name: req.pod.name,
              uid: req.pod.uid,
            },
          },
        },
      });
      return { token: r.status?.token ?? "", ttlSeconds: r.spec?.expirationSeconds };
    } catch (err) {
      throw fromApiError(
        `Requesting a token for ServiceAccount "${req.namespace}/${req.serviceAccount}"`,
        err,
      );
    }
  }

  async #node(dev: DeviceState): Promise<void> {
    if (dev.runtime) return;
    try {
      const node = await this.#o.core.readNode({ name: dev.device.node });
      const rt = node.status?.nodeInfo?.containerRuntimeVersion ?? "";
      if (rt) dev.runtime = rt.split("://")[0];
      dev.allocatable = node.status?.allocatable;
    } catch (err) {
      this.#log.debug("reading the node failed", {
        node: dev.device.node,
        error: errorMessage(err),
      });
    }
  }

  async #allocatable(dev: DeviceState): Promise<Record<string, string> | undefined> {
    await this.#node(dev);
    return dev.allocatable;
  }

  async #ctx(dev: DeviceState): Promise<{ hostIP: string; runtime: string }> {
    await this.#node(dev);
    return { hostIP: this.#o.kubeletAddress, runtime: dev.runtime ?? "container" };
  }

  async #writeStatus(pod: V1Pod, status: PodStatusJson): Promise<void> {
    if (!statusChanged(pod, status)) return;
    try {
      await this.#o.core.patchNamespacedPodStatus(
        { name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, body: { status } },
        // Strategic merge: conditions merge by type, so conditions others own (readiness
        // gates, DisruptionTarget) stay; a JSON merge patch would replace the whole list.
        { contentType: PATCH.strategic },
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw fromApiError(
        `Updating the status of pod "${pod.metadata?.namespace}/${pod.metadata?.name}"`,
        err,
      );
    }
    for (const e of containerEvents(pod.status, status, pod.metadata?.name ?? "")) {
      this.#o.recordEvent?.(pod, e.type, e.reason, e.message);
    }
  }

  /** Waiting containers with reason CreateContainerConfigError, as the kubelet reports it. */
  async #writeConfigError(pod: V1Pod, dev: DeviceState, message: string): Promise<void> {
    const msg = create(PodStatusMsgSchema, {
      uid: pod.metadata?.uid,
      phase: PodStatusMsg_Phase.PENDING,
      containers: (pod.spec?.containers ?? []).map((c) => ({
        name: c.name,
        reason: "CreateContainerConfigError",
        message,
      })),
    });
    try {
      await this.#writeStatus(pod, podStatusFrom(msg, pod, await this.#ctx(dev)));
    } catch (err) {
      this.#log.warn("writing the pod's config error failed", { error: errorMessage(err) });
    }
  }

  /**
   * Stops and removes pod `uid` on the device; returns what the device
   * reported once its containers stopped (none when it did not have the pod).
   */
  async #deleteOnDevice(
    dev: DeviceState,
    uid: string,
    graceSeconds: number,
  ): Promise<PodStatusMsg> {
    const reply = await dev.device.client.request(
      CmdKind.CMD_POD_DELETE,
      toBinary(
        PodDeleteCmdSchema,
        create(PodDeleteCmdSchema, { uid, graceSeconds: BigInt(graceSeconds) }),
      ),
      { timeoutMs: (graceSeconds + 30) * 1000 },
    );
    dev.statuses.delete(uid);
    dev.running.delete(uid);
    try {
      return fromBinary(PodStatusMsgSchema, reply.payload);
    } catch {
      return create(PodStatusMsgSchema, { uid });
    }
  }

  /** Compares the device's pods with Kubernetes': removes orphans, adopts matching specs. */
  async #syncDevice(dev: DeviceState): Promise<void> {
    const node = dev.device.node;
    const reply = await dev.device.client.request(
      CmdKind.CMD_POD_LIST,
      toBinary(PodListCmdSchema, create(PodListCmdSchema, {})),
      { timeoutMs: this.#o.requestTimeoutMs ?? 60_000 },
    );
    const list = fromBinary(PodStatusListMsgSchema, reply.payload);
    const ours = new Map<string, V1Pod>();
    for (const key of this.#byNode.get(node) ?? []) {
      const p = this.#cached(key);
      if (p?.spec?.nodeName === node && p.metadata?.uid && this.refusal(p) === undefined) {
        ours.set(p.metadata.uid, p);
      }
    }
    for (const s of list.pods) {
      const pod = ours.get(s.uid);
      if (!pod) {
        this.#log.info("removing a pod Kubernetes no longer has", {
          node,
          uid: s.uid,
          pod: `${s.namespace}/${s.name}`,
        });
        try {
          await this.#deleteOnDevice(dev, s.uid, 0);
        } catch (err) {
          this.#log.warn("removing an orphaned pod failed", {
            uid: s.uid,
            error: errorMessage(err),
          });
        }
        continue;
      }
      dev.statuses.set(s.uid, s);
      if (s.specHash && s.specHash === podSpecHash(pod)) dev.running.set(s.uid, s.specHash);
    }
    for (const key of this.#byNode.get(node) ?? []) this.queue.add(key);
  }

  #onDeviceMessage(dev: DeviceState, reply: Reply): void {
    if (reply.kind !== MsgKind.MSG_POD_STATUS) return;
    let msg: PodStatusMsg;
    try {
      msg = fromBinary(PodStatusMsgSchema, reply.payload);
    } catch (err) {
      this.#log.warn("undecodable pod status from the device", {
        node: dev.device.node,
        error: errorMessage(err),
      });
      return;
    }
    const key = `${msg.namespace}/${msg.name}`;
    const known = this.#known.get(key);
    if (msg.phase === PodStatusMsg_Phase.DELETED) {
      dev.statuses.delete(msg.uid);
      dev.running.delete(msg.uid);
      return;
    }
    if (!known || known.uid !== msg.uid) {
      // Not a pod Kubernetes has on this node: wait for the list comparison, then remove it.
      this.#log.debug("status of a pod not known on this node", {
        pod: key,
        uid: msg.uid,
        known: known?.uid ?? "",
      });
      dev.synced.then(async () => {
        const again = this.#known.get(key);
        if (again?.uid === msg.uid) return;
        try {
          await this.#deleteOnDevice(dev, msg.uid, 0);
        } catch (err) {
          if (!isKind(err, "canceled")) {
            this.#log.warn("removing an unknown pod failed", {
              uid: msg.uid,
              error: errorMessage(err),
            });
          }
        }
      });
      return;
    }
    this.#log.debug("pod status from the device", {
      pod: key,
      uid: msg.uid,
      ready: msg.containers.map((c) => `${c.name}=${c.ready}`).join(","),
    });
    dev.statuses.set(msg.uid, msg);
    this.queue.add(key);
  }
}
