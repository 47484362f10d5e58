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
 * - a pod being deleted (deletionTimestamp) is stopped on the device with its
 *   grace period, then the object is removed with grace 0 (kubelet
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
 * Tenancy: a device runs only pods of its EdgeDevice's namespace, plus the
 * namespaces its `spec.pod.allowedNamespaces` lists. Any other pod bound to its
 * Node is refused the way a kubelet refuses a pod it cannot admit: phase
 * Failed with reason NamespaceNotAllowed and a message naming the rule; it is
 * never sent to the device (and is stopped there if the rule changed while it
 * ran). The virtual pod is the pod `<namespace>/<device>` whose uid the
 * EdgeDevice's status records (never a label); it is left to the device
 * session, and a pod of that name with another uid is a look-alike that is
 * never sent to the device either.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type CoreV1Api,
  type KubeConfig,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
  type V1PodList,
  Watch,
} from "@kubernetes/client-node";
import { CmdKind, MsgKind } from "../../common/envelope.ts";
import { errorMessage, isKind } from "../../common/errors.ts";
import { readySignal } from "../../common/lifecycle.ts";
import { type Logger, nullLogger } from "../../common/log.ts";
import type { Reply, SessionClient } from "../../common/session/session_client.ts";
import {
  PodDeleteCmdSchema,
  PodEnsureCmdSchema,
  PodListCmdSchema,
  PodStatusListMsgSchema,
  type PodStatusMsg,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "../../proto/gen/aranya/pod_pb.ts";
import type { EdgeDirectory } from "../edgedevice/controller.ts";
import { fromApiError, isNotFound } from "../kube/errors.ts";
import { WorkQueue } from "../kube/work_queue.ts";
import { podStatusFrom, type PodStatusJson, statusChanged } from "../pods/pod_status.ts";
import { PodConfigError, type PodSources, podSpecHash, resolvePod } from "../pods/resolve.ts";

/** Reason of a pod refused by the tenancy rule (phase Failed). */
export const REASON_NOT_ALLOWED = "NamespaceNotAllowed";

/** Options for {@link PodController}. */
export interface PodControllerOptions {
  kubeconfig: KubeConfig;
  core: CoreV1Api;
  /** Which EdgeDevice owns a Node (tenancy and the virtual pod come from it). */
  directory: EdgeDirectory;
  /** Namespaces whose pods are watched; empty or absent: all. */
  namespaces?: string[];
  /** Address advertised for every edge node (pods' hostIP). */
  kubeletAddress: string;
  workers?: number;
  /** Longest wait for a device's reply to ensure/list, ms (default 60 s). */
  requestTimeoutMs?: number;
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

/** Syncs pods bound to edge nodes with their devices. */
export class PodController {
  readonly #o: PodControllerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly queue: WorkQueue;
  readonly #devices = new Map<string, DeviceState>();
  /** Pod key -> uid and node, for pods seen bound to a node. */
  readonly #known = new Map<string, { uid: string; node: string }>();
  /** Node -> pod keys. */
  readonly #byNode = new Map<string, Set<string>>();
  readonly #caches: ListWatch<V1Pod>[] = [];

  constructor(opts: PodControllerOptions) {
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({ controller: "pods" });
    // Workers mostly wait on the API server and devices: many at once hide that latency.
    this.queue = new WorkQueue({ workers: opts.workers ?? 16, log: this.#log });
  }

  /** Resolves once every pod watch listed and runs. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Number of pod watches (independent of the number of devices). */
  get watches(): number {
    return this.#caches.length;
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
    const watch = new Watch(this.#o.kubeconfig);
    for (const ns of namespaces) {
      const path = ns ? `/api/v1/namespaces/${ns}/pods` : "/api/v1/pods";
      const fieldSelector = "spec.nodeName!=";
      const list = () =>
        (ns
          ? this.#o.core.listNamespacedPod({ namespace: ns, fieldSelector })
          : this.#o.core.listPodForAllNamespaces({ fieldSelector })) as Promise<V1PodList>;
      const cache = new ListWatch<V1Pod>(path, watch, list, false, undefined, fieldSelector);
      const onChange = (pod: V1Pod) => this.#observe(pod);
      cache.on("add", onChange);
      cache.on("update", onChange);
      cache.on("delete", onChange);
      cache.on("error", (err: unknown) => {
        this.#log.warn("pod watch failed; restarting", { error: errorMessage(err) });
        setTimeout(() => {
          if (!signal.aborted) cache.start().catch(() => {});
        }, 1000);
      });
      this.#caches.push(cache);
    }
    await Promise.all(this.#caches.map((c) => c.start()));
    this.#ready.resolve();
    this.#log.info("pod controller running", { watches: this.#caches.length });
    await this.queue.run(signal, (key) => this.#reconcile(key));
    await Promise.all(this.#caches.map((c) => c.stop()));
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
   * EdgeDevice that owns the node, with the uid that EdgeDevice recorded.
   */
  isVirtualPod(pod: V1Pod): boolean {
    return this.#virtualKind(pod) === "virtual";
  }

  /**
   * For a pod with the namespace and name of its node's virtual pod: "virtual"
   * (the uid the EdgeDevice recorded), "pending" (no uid recorded yet: the
   * cache may trail the status) or "look-alike". Undefined for other pods.
   */
  #virtualKind(pod: V1Pod): "virtual" | "pending" | "look-alike" | undefined {
    const owner = this.#o.directory.ownerOf(pod.spec?.nodeName ?? "");
    if (
      !owner || pod.metadata?.namespace !== owner.metadata?.namespace ||
      pod.metadata?.name !== owner.metadata?.name
    ) return undefined;
    const uid = owner.status?.virtualPod?.uid;
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
    const allowed = owner.spec?.pod?.allowedNamespaces ?? [];
    if (ns === own || allowed.includes(ns)) return undefined;
    return `Pod "${ns}/${pod.metadata?.name}" may not run on node "${node}": EdgeDevice "${device}" runs pods of namespace "${own}"${
      allowed.length ? ` and of ${allowed.map((a) => `"${a}"`).join(", ")}` : " only"
    } (spec.pod.allowedNamespaces)`;
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
      }
      if (!pod) return;
    }
    if (!pod) return;
    const uid = pod.metadata!.uid!;
    const node = pod.spec!.nodeName!;
    this.#known.set(key, { uid, node });
    const virtual = this.#virtualKind(pod);
    if (virtual === "virtual" || virtual === "pending") return;
    const refused = this.refusal(pod);
    let dev = this.#devices.get(node);
    const owner = this.#o.directory.ownerOf(node);
    // Only the device of the EdgeDevice that owns the node is ever told about its pods.
    if (dev && dev.device.device !== `${owner?.metadata?.namespace}/${owner?.metadata?.name}`) {
      dev = undefined;
    }
    if (refused !== undefined) {
      await this.#refuse(pod, dev, refused);
      return;
    }
    if (!dev) return; // not an edge node, or its device is offline: nothing to do now
    await dev.synced;
    const log = this.#log.with({ pod: key, node });

    if (pod.metadata?.deletionTimestamp) {
      const grace = pod.metadata.deletionGracePeriodSeconds ?? 30;
      await this.#deleteOnDevice(dev, uid, grace);
      await this.#finishDeletion(pod, "the deleted pod");
      log.info("pod deleted on the device");
      return;
    }
    const phase = pod.status?.phase;
    if ((phase === "Succeeded" || phase === "Failed") && !dev.statuses.has(uid)) return;

    const hash = podSpecHash(pod);
    if (dev.running.get(uid) !== hash) {
      let cmd;
      try {
        cmd = await resolvePod(pod, {
          sources: this.#sources,
          hostIP: this.#o.kubeletAddress,
          allocatable: await this.#allocatable(dev),
          dns: owner?.spec?.pod?.dns,
          warn: (m) => {
            log.warn("pod resolution", { problem: m });
            this.#o.recordEvent?.(pod, "Warning", "FailedResolve", m);
          },
        });
      } catch (err) {
        if (err instanceof PodConfigError) {
          await this.#writeConfigError(pod, dev, err.message);
          this.#o.recordEvent?.(pod, "Warning", "Failed", `Error: ${err.message}`);
        }
        throw err;
      }
      const reply = await dev.device.client.request(
        CmdKind.CMD_POD_ENSURE,
        toBinary(PodEnsureCmdSchema, cmd),
        { timeoutMs: this.#o.requestTimeoutMs ?? 60_000 },
      );
      const status = fromBinary(PodStatusMsgSchema, reply.payload);
      dev.statuses.set(uid, status);
      dev.running.set(uid, hash);
      log.info("pod sent to the device", { specHash: hash });
    }
    const status = dev.statuses.get(uid);
    if (status) await this.#writeStatus(pod, podStatusFrom(status, pod, await this.#ctx(dev)));
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
    if (pod.metadata?.deletionTimestamp) return await this.#finishDeletion(pod, "the refused pod");
    if (
      pod.status?.phase === "Failed" && pod.status.reason === REASON_NOT_ALLOWED &&
      pod.status.message === message
    ) return;
    try {
      await this.#o.core.patchNamespacedPodStatus(
        {
          ...ref,
          body: { status: { phase: "Failed", reason: REASON_NOT_ALLOWED, message } },
        },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw fromApiError(`Refusing pod "${ref.namespace}/${ref.name}"`, err);
    }
    this.#log.warn("pod refused", { pod: `${ref.namespace}/${ref.name}`, reason: message });
    this.#o.recordEvent?.(pod, "Warning", REASON_NOT_ALLOWED, message);
  }

  /** Reads Secrets, ConfigMaps and tokens for pod resolution (reads only; no caching of secrets). */
  readonly #sources: PodSources = {
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
    serviceAccountToken: async (req) => {
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
        return r.status?.token ?? "";
      } catch (err) {
        throw fromApiError(
          `Requesting a token for ServiceAccount "${req.namespace}/${req.serviceAccount}"`,
          err,
        );
      }
    },
  };

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
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } catch (err) {
      if (isNotFound(err)) return;
      throw fromApiError(
        `Updating the status of pod "${pod.metadata?.namespace}/${pod.metadata?.name}"`,
        err,
      );
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

  async #deleteOnDevice(dev: DeviceState, uid: string, graceSeconds: number): Promise<void> {
    await dev.device.client.request(
      CmdKind.CMD_POD_DELETE,
      toBinary(
        PodDeleteCmdSchema,
        create(PodDeleteCmdSchema, { uid, graceSeconds: BigInt(graceSeconds) }),
      ),
      { timeoutMs: (graceSeconds + 30) * 1000 },
    );
    dev.statuses.delete(uid);
    dev.running.delete(uid);
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
    dev.statuses.set(msg.uid, msg);
    this.queue.add(key);
  }
}
