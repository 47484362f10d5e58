/**
 * The EdgeDevice reconciler (level-triggered: it re-reads everything for a
 * key and converges):
 *
 * - ensures the virtual pod (see virtual_pod.ts), controlled by the
 *   EdgeDevice through an owner reference;
 * - ensures the Node named after the device, marked with the EdgeDevice's uid
 *   (annotation aranya.arhat.dev/edge-device-uid) and the virtual pod's
 *   (aranya.arhat.dev/virtual-pod-uid: only aranya writes Nodes, so that
 *   record cannot be forged by a tenant): labels arhat.dev/role=EdgeDevice,
 *   arhat.dev/name, arhat.dev/namespace (plus the spec's labels and
 *   annotations), the taint arhat.dev/namespace=<ns>:NoSchedule unless
 *   spec.node.namespaceTaint is false (plus the spec's taints). Its status
 *   (addresses, conditions) is written by the replica that holds the device's
 *   link (virtualnode/device_session.ts). A Node of that name that aranya did
 *   not create for this EdgeDevice (another namespace's device, a real node)
 *   is never adopted, changed or deleted: the EdgeDevice gets NodeOwned=False
 *   and a Warning NodeNameTaken Event, and nothing else is provisioned;
 * - ensures the device's credentials Secret (a random token, kept once made,
 *   controlled by the EdgeDevice through an owner reference), last: a device
 *   can connect only once it exists.
 *
 * A new device costs three writes here (pod, Node, Secret); its status is
 * first written when it connects. No finalizer: when the EdgeDevice is gone,
 * its key still comes here (the informer's delete, or the Node watch for a
 * Node whose EdgeDevice no longer exists) and the Node of that name carrying
 * a uid of no existing EdgeDevice of its namespace is deleted, with the
 * virtual pod (grace 0: no kubelet will finish it), the node Lease and the
 * Secret (each with its uid as a precondition; the garbage collector would
 * remove the last two too, owned by the Node and the EdgeDevice, but slowly). An EdgeDevice still carrying the finalizer of
 * an earlier aranya is cleaned up that way and the finalizer removed.
 *
 * It records Events on the EdgeDevice: CleanedUp (finalizer only), Warnings
 * NodeNameTaken, VirtualPodNameTaken, CredentialsNotOwned, and ReconcileFailed
 * naming what the API refused (repeats aggregate into one Event). Connected
 * and Disconnected are recorded by the device session, which knows the link.
 *
 * Nodes are cluster-scoped and EdgeDevices namespaced, so owner references
 * cannot tie them together: the uid annotation does.
 */
import { Buffer } from "node:buffer";
import type { V1Node, V1Pod, V1Secret } from "@kubernetes/client-node";
import type { CoordinationApi, CoreApi, CustomObjectsApi } from "../kube/apis.ts";
import { errorMessage } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";
import {
  type EventRecorder,
  type EventType,
  nullEventRecorder,
  type ObjectRef,
} from "../kube/event_recorder.ts";
import { nodeTakenStatus, pendingStatus } from "./edge_device_status.ts";
import {
  ANNOTATION_OWNER_UID,
  ANNOTATION_VIRTUAL_POD_UID,
  API_VERSION,
  CONDITION_NODE_OWNED,
  credentialsSecretName,
  type EdgeDevice,
  FINALIZER,
  GROUP,
  KIND,
  LABEL_NAME,
  LABEL_NAMESPACE,
  LABEL_ROLE,
  ownedBy,
  ownerRef,
  PLURAL,
  REASON_NODE_NAME_TAKEN,
  TAINT_NAMESPACE,
  VERSION,
} from "./types.ts";
import { virtualPod } from "./virtual_pod.ts";

/** Told about a device (from the informer, on every replica). */
export type DeviceHook = (ed: EdgeDevice) => void;
/** Told `namespace/name` (idempotent: may be called more than once for one device). */
export type DeviceRemovedHook = (namespace: string, name: string) => void;

/** Options for {@link EdgeDeviceReconciler}. */
export interface EdgeDeviceReconcilerOptions {
  core: CoreApi;
  /** For the Node's Lease (removed with the Node). */
  coordination: CoordinationApi;
  custom: CustomObjectsApi;
  /** Where Events go (default: nowhere). */
  events?: EventRecorder;
  /** Told the token of a credentials Secret this replica created (for the authenticator). */
  onCredentials?: (device: string, uid: string, token: string) => void;
  /** The EdgeDevice as cached (default: always read from the API). Stale is fine: writes carry resourceVersions. */
  cachedDevice?: (key: string) => EdgeDevice | undefined;
  /** The Node as cached (default: always read from the API). */
  cachedNode?: (name: string) => V1Node | undefined;
  log?: Logger;
  /** Clock, injectable for tests. */
  now?: () => Date;
}

/** Converges one EdgeDevice ("<namespace>/<name>") and what it owns. */
export class EdgeDeviceReconciler {
  readonly #o: EdgeDeviceReconcilerOptions;
  readonly #log: Logger;
  readonly #events: EventRecorder;
  readonly #now: () => Date;

  constructor(opts: EdgeDeviceReconcilerOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
    this.#events = opts.events ?? nullEventRecorder;
    this.#now = opts.now ?? (() => new Date());
  }

  /**
   * Reconciles `key`; throws (to be retried) when the API refuses something,
   * after recording a Warning ReconcileFailed Event on the EdgeDevice.
   */
  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split("/") as [string, string];
    const ref: ObjectRef = { apiVersion: API_VERSION, kind: KIND, name, namespace };
    try {
      await this.#reconcile(ref, namespace, name);
    } catch (err) {
      await this.#events.record(ref, "Warning", "ReconcileFailed", errorMessage(err));
      throw err;
    }
  }

  async #reconcile(ref: ObjectRef, namespace: string, name: string): Promise<void> {
    const key = `${namespace}/${name}`;
    let ed: EdgeDevice;
    try {
      const cached = this.#o.cachedDevice?.(key);
      // Copied: the cache's object is shared, and this pass may change its status.
      ed = cached ? structuredClone(cached) : await this.#o.custom.getNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        namespace,
        name,
      }) as EdgeDevice;
    } catch (err) {
      if (isNotFound(err)) { // gone: remove what was made for it, if anything is left
        await this.#removeOrphan(namespace, name, undefined);
        return;
      }
      throw fromApiError(`Reading EdgeDevice "${key}"`, err);
    }
    ref.uid = ed.metadata?.uid;
    // Events are written beside the reconcile, not waited for: they never fail it, and waiting
    // would add an API round trip per Event to every device's setup.
    const event = (type: EventType, reason: string, message: string): void => {
      void this.#events.record(ref, type, reason, message);
    };
    if (ed.metadata?.deletionTimestamp) {
      // Another finalizer holds it: everything of it goes now all the same.
      await this.#removeOrphan(namespace, name, ed.metadata.uid);
      if (ed.metadata.finalizers?.includes(FINALIZER)) {
        event(
          "Normal",
          "CleanedUp",
          `Removed Node "${name}", the virtual pod, and with them the Lease and the credentials Secret`,
        );
        await this.#removeFinalizer(ed);
        this.#log.info("edge device removed", { device: key });
      }
      return;
    }
    const uid = ed.metadata!.uid!;
    // The Secret comes last: a device can only connect once it exists, and then its Node and
    // virtual pod are there for the device session to write.
    const cachedNode = this.#o.cachedNode?.(name);
    let node = cachedNode ? structuredClone(cachedNode) : await this.#readNode(name);
    if (node && this.#orphanOf(node, namespace, uid)) {
      // Made for an earlier EdgeDevice of this name that is gone (deleted while no aranya ran).
      await this.#removeOrphan(namespace, name, undefined);
      node = undefined;
    }
    if (node && node.metadata?.annotations?.[ANNOTATION_OWNER_UID] !== uid) {
      // Someone else's Node: nothing of it changes, and nothing is provisioned for this
      // device (no virtual pod bound to that Node, no credentials to dial as it).
      const taken = takenMessage(node, namespace);
      const cond = ed.status?.conditions?.find((c) => c.type === CONDITION_NODE_OWNED);
      if (cond?.status !== "False" || cond.message !== taken) {
        ed.status = nodeTakenStatus(ed.status, taken, this.#now());
        await this.#replaceStatus(ed);
        event("Warning", REASON_NODE_NAME_TAKEN, taken);
      }
      this.#log.warn("edge device's node name is taken", { device: key, why: taken });
      return;
    }
    const vp = await this.#ensureVirtualPod(ed, namespace, name, node);
    if (vp.taken !== undefined) event("Warning", "VirtualPodNameTaken", vp.taken);
    const ensured = await this.#ensureNode(ed, namespace, name, node, vp.uid);
    if (ensured.taken !== undefined) return; // made meanwhile by someone else: the next pass says
    const owned = ed.status?.conditions?.find((c) => c.type === CONDITION_NODE_OWNED);
    if (owned && owned.status !== "True") {
      // The name was taken before and is this device's now.
      ed.status = pendingStatus(ed.status, name, this.#now());
      await this.#replaceStatus(ed);
    }
    // A new device (no Node before this pass) has no Secret yet: create it without a read first.
    const secret = await this.#ensureSecret(namespace, name, uid, node === undefined);
    if (secret === "foreign") {
      event(
        "Warning",
        "CredentialsNotOwned",
        `Secret "${namespace}/${
          credentialsSecretName(name)
        }" exists but aranya did not create it for this EdgeDevice, so the device cannot authenticate with it; delete it and aranya creates the device's credentials`,
      );
    }
    if (ed.metadata?.finalizers?.includes(FINALIZER)) await this.#removeFinalizer(ed);
  }

  /** What `f` reads, or undefined when it does not exist. */
  async #read<T>(what: string, f: () => Promise<T>): Promise<T | undefined> {
    try {
      return await f();
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw fromApiError(`Reading ${what}`, err);
    }
  }

  /** Node `name`, if it exists. */
  async #readNode(name: string): Promise<V1Node | undefined> {
    try {
      return await this.#o.core.readNode({ name });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw fromApiError(`Reading Node "${name}"`, err);
    }
  }

  /**
   * True when `node` was made for an EdgeDevice of `namespace` that no longer
   * exists: it names that namespace and an EdgeDevice uid other than `uid`
   * (the one EdgeDevice of that name there now, if any; names are unique).
   */
  #orphanOf(node: V1Node, namespace: string, uid: string | undefined): boolean {
    const owner = node.metadata?.annotations?.[ANNOTATION_OWNER_UID];
    return owner !== undefined && owner !== uid &&
      node.metadata?.labels?.[LABEL_NAMESPACE] === namespace &&
      node.metadata?.labels?.[LABEL_ROLE] === "EdgeDevice";
  }

  async #replace(ed: EdgeDevice, what: string): Promise<EdgeDevice> {
    try {
      return await this.#replaceObject(ed);
    } catch (err) {
      throw fromApiError(what, err);
    }
  }

  #replaceObject(ed: EdgeDevice): Promise<EdgeDevice> {
    return this.#o.custom.replaceNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      plural: PLURAL,
      namespace: ed.metadata!.namespace!,
      name: ed.metadata!.name!,
      body: ed,
    }) as Promise<EdgeDevice>;
  }

  /** Writes `ed.status` through the status subresource. */
  async #replaceStatus(ed: EdgeDevice): Promise<void> {
    const name = ed.metadata!.name!;
    const namespace = ed.metadata!.namespace!;
    try {
      await this.#o.custom.replaceNamespacedCustomObjectStatus({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: PLURAL,
        name,
        body: ed,
      });
    } catch (err) {
      throw fromApiError(`Updating the status of EdgeDevice "${namespace}/${name}"`, err);
    }
  }

  /**
   * Ensures the device's credentials Secret, owned by the EdgeDevice (its uid
   * in a controller owner reference: the authenticator accepts no other).
   * "foreign": a Secret of that name exists that this EdgeDevice does not own;
   * it is left alone.
   */
  async #ensureSecret(
    namespace: string,
    name: string,
    uid: string,
    createFirst: boolean,
  ): Promise<"created" | "exists" | "foreign"> {
    const secretName = credentialsSecretName(name);
    const whose = async (): Promise<"exists" | "foreign" | undefined> => {
      try {
        const s = await this.#o.core.readNamespacedSecret({ name: secretName, namespace });
        return ownedBy(s.metadata, uid) ? "exists" : "foreign";
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw fromApiError(`Reading Secret "${namespace}/${secretName}"`, err);
      }
    };
    if (!createFirst) {
      const found = await whose();
      if (found) return found;
    }
    const token = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64url");
    const secret: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: secretName,
        namespace,
        labels: { [LABEL_ROLE]: "EdgeDevice", [LABEL_NAME]: name },
        ownerReferences: [ownerRef(name, uid)],
      },
      type: "Opaque",
      stringData: { token },
    };
    try {
      await this.#o.core.createNamespacedSecret({ namespace, body: secret });
      this.#o.onCredentials?.(`${namespace}/${name}`, uid, token);
    } catch (err) {
      if (apiStatus(err) !== 409) {
        throw fromApiError(`Creating Secret "${namespace}/${secretName}"`, err);
      }
      // There already: whose it is decides (made meanwhile and gone again: the next pass).
      return (await whose()) ?? "exists";
    }
    return "created";
  }

  #desiredNode(
    ed: EdgeDevice,
    namespace: string,
    name: string,
    virtualPodUid: string | undefined,
  ): V1Node {
    const spec = ed.spec?.node ?? {};
    const uid = ed.metadata!.uid!;
    return {
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name,
        labels: {
          ...spec.labels,
          [LABEL_ROLE]: "EdgeDevice",
          [LABEL_NAME]: name,
          [LABEL_NAMESPACE]: namespace,
          // As a kubelet sets it: the Node's name (unique, unlike the devices' host names).
          "kubernetes.io/hostname": name,
        },
        annotations: {
          ...spec.annotations,
          [ANNOTATION_OWNER_UID]: uid,
          ...(virtualPodUid ? { [ANNOTATION_VIRTUAL_POD_UID]: virtualPodUid } : {}),
          [ANNOTATION_SPEC_KEYS]: JSON.stringify({
            labels: Object.keys(spec.labels ?? {}).sort(),
            annotations: Object.keys(spec.annotations ?? {}).sort(),
          }),
        },
      },
      spec: {
        taints: [
          // spec.node.namespaceTaint: false (a cluster admin's opt-in) leaves it off, so pods
          // that do not tolerate it may be scheduled there (they are still admitted only by the
          // tenancy rule of the pod controller).
          ...(spec.namespaceTaint === false
            ? []
            : [{ key: TAINT_NAMESPACE, value: namespace, effect: "NoSchedule" }]),
          ...(spec.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect })),
        ],
      },
    };
  }

  /**
   * Ensures the Node (`node`: as just read, if it exists), recording the
   * virtual pod's uid. A changed spec.node updates the Node in place (metadata
   * and spec only: the status the device's replica writes is untouched).
   * `taken`: a Node of that name appeared meanwhile that is not this
   * EdgeDevice's.
   */
  async #ensureNode(
    ed: EdgeDevice,
    namespace: string,
    name: string,
    node: V1Node | undefined,
    virtualPodUid: string | undefined,
  ): Promise<{ taken?: string }> {
    const want = this.#desiredNode(ed, namespace, name, virtualPodUid);
    if (!node) {
      try {
        await this.#o.core.createNode({ body: want });
        return {};
      } catch (err) {
        if (apiStatus(err) !== 409) throw fromApiError(`Creating Node "${name}"`, err);
        // Made meanwhile by someone else: whose it is decides below.
        node = await this.#readNode(name);
        if (!node) return { taken: `Node "${name}" was being created and deleted meanwhile` };
      }
    }
    if (node.metadata?.annotations?.[ANNOTATION_OWNER_UID] !== ed.metadata!.uid) {
      return { taken: takenMessage(node, namespace) };
    }
    await this.#ensureNodeMetadata(node, want);
    return {};
  }

  /**
   * Brings the Node's labels, annotations and taints in line with `want`;
   * a conflict (someone else wrote the Node meanwhile) re-reads and tries again.
   */
  async #ensureNodeMetadata(node: V1Node, want: V1Node): Promise<V1Node> {
    const name = node.metadata!.name!;
    for (let attempt = 1;; attempt++) {
      // Keys the spec set before and no longer sets are removed; keys others set are kept.
      const before = specKeys(node.metadata?.annotations?.[ANNOTATION_SPEC_KEYS]);
      const labels = merged(node.metadata?.labels, before.labels, want.metadata!.labels!);
      const annotations = merged(
        node.metadata?.annotations,
        before.annotations,
        want.metadata!.annotations!,
      );
      // Taints that Kubernetes manages (node.kubernetes.io/not-ready, ...) stay as they are.
      const system = (node.spec?.taints ?? []).filter((x) => isSystemTaint(x.key));
      const taints = [...want.spec!.taints!, ...system];
      if (
        sameEntries(labels, node.metadata?.labels) &&
        sameEntries(annotations, node.metadata?.annotations) &&
        JSON.stringify(taints) === JSON.stringify(node.spec?.taints ?? [])
      ) return node;
      node.metadata = { ...node.metadata, labels, annotations };
      node.spec = { ...node.spec, taints };
      try {
        return await this.#o.core.replaceNode({ name, body: node });
      } catch (err) {
        if (apiStatus(err) !== 409 || attempt >= 4) {
          throw fromApiError(`Updating Node "${name}"`, err);
        }
      }
      try {
        node = await this.#o.core.readNode({ name });
      } catch (err) {
        throw fromApiError(`Reading Node "${name}"`, err);
      }
    }
  }

  /**
   * Ensures the virtual pod (see virtual_pod.ts). The pod of that name is the
   * device's only when its uid is the one its Node records (or, before the
   * Node records one, when this EdgeDevice controls it by owner reference);
   * anything else is a look-alike (`taken`) and left alone.
   */
  async #ensureVirtualPod(
    ed: EdgeDevice,
    namespace: string,
    name: string,
    node: V1Node | undefined,
  ): Promise<{ uid?: string; taken?: string }> {
    const read = async (): Promise<V1Pod | undefined> => {
      try {
        return await this.#o.core.readNamespacedPod({ name, namespace });
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw fromApiError(`Reading Pod "${namespace}/${name}"`, err);
      }
    };
    const recorded = node?.metadata?.annotations?.[ANNOTATION_VIRTUAL_POD_UID];
    // A new device (no Node yet) has no virtual pod yet: create it without a read first.
    let pod = node ? await read() : undefined;
    if (!pod) {
      try {
        pod = await this.#o.core.createNamespacedPod({
          namespace,
          body: virtualPod(namespace, name, ed.metadata!.uid!),
        });
        return { uid: pod.metadata?.uid };
      } catch (err) {
        if (apiStatus(err) !== 409) {
          throw fromApiError(`Creating the virtual pod "${namespace}/${name}"`, err);
        }
        pod = await read();
        // Made and gone again meanwhile: the next pass looks at it.
        if (!pod) return { uid: recorded };
      }
    }
    if (isOurVirtualPod(pod, ed, recorded)) return { uid: pod.metadata!.uid };
    return {
      uid: recorded,
      taken:
        `Pod "${namespace}/${name}" exists but is not the virtual pod aranya created for this EdgeDevice; host access through it is refused. Delete it and aranya creates the virtual pod`,
    };
  }

  /**
   * Removes the Node `name` and its virtual pod when they were made for an
   * EdgeDevice of `namespace` that is gone (`deleting`: the uid of one being
   * deleted), then the node Lease and the credentials Secret. Each delete
   * carries the uid as a precondition, so an object replaced meanwhile survives.
   */
  async #removeOrphan(
    namespace: string,
    name: string,
    deleting: string | undefined,
  ): Promise<void> {
    // A cached Node is enough to decide (the deletes carry its uid as a precondition).
    const node = this.#o.cachedNode?.(name) ?? await this.#readNode(name);
    if (!node) return;
    const owner = node.metadata?.annotations?.[ANNOTATION_OWNER_UID];
    const mine = deleting !== undefined
      ? owner === deleting
      : this.#orphanOf(node, namespace, undefined);
    if (!mine || !owner) return;
    const gone = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (err) {
        if (!isNotFound(err) && apiStatus(err) !== 409) throw fromApiError(`Deleting ${what}`, err);
      }
    };
    const nodeUid = node.metadata!.uid!;
    await gone(
      `Node "${name}"`,
      () => this.#o.core.deleteNode({ name, body: { preconditions: { uid: nodeUid } } }),
    );
    let pod: V1Pod | undefined;
    try {
      pod = await this.#o.core.readNamespacedPod({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Pod "${namespace}/${name}"`, err);
    }
    const podUid = pod?.metadata?.uid;
    const recorded = node.metadata?.annotations?.[ANNOTATION_VIRTUAL_POD_UID];
    if (pod && podUid && (podUid === recorded || (!recorded && ownedBy(pod.metadata, owner)))) {
      await gone(
        `Pod "${namespace}/${name}"`,
        // In the body: the API server reads delete options from the body when there is one.
        () =>
          this.#o.core.deleteNamespacedPod({
            name,
            namespace,
            body: { gracePeriodSeconds: 0, preconditions: { uid: podUid } },
          }),
      );
    }
    // The garbage collector would remove these two as well, at its own pace (kube-controller-
    // manager's client rate limit: tens per second); a fleet's deletion should not wait for it.
    const lease = await this.#read(
      `Lease "kube-node-lease/${name}"`,
      () => this.#o.coordination.readNamespacedLease({ name, namespace: "kube-node-lease" }),
    );
    const leaseUid = lease?.metadata?.uid;
    if (leaseUid && lease.metadata?.ownerReferences?.some((r) => r.uid === nodeUid)) {
      await gone(
        `Lease "kube-node-lease/${name}"`,
        () =>
          this.#o.coordination.deleteNamespacedLease({
            name,
            namespace: "kube-node-lease",
            body: { preconditions: { uid: leaseUid } },
          }),
      );
    }
    const secretName = credentialsSecretName(name);
    const secret = await this.#read(
      `Secret "${namespace}/${secretName}"`,
      () => this.#o.core.readNamespacedSecret({ name: secretName, namespace }),
    );
    const secretUid = secret?.metadata?.uid;
    if (secretUid && ownedBy(secret.metadata, owner)) {
      await gone(
        `Secret "${namespace}/${secretName}"`,
        () =>
          this.#o.core.deleteNamespacedSecret({
            name: secretName,
            namespace,
            body: { preconditions: { uid: secretUid } },
          }),
      );
    }
    this.#log.info("edge device's node removed", { device: `${namespace}/${name}` });
  }

  async #removeFinalizer(ed: EdgeDevice): Promise<void> {
    const finalizers = (ed.metadata?.finalizers ?? []).filter((f) => f !== FINALIZER);
    if (finalizers.length === ed.metadata?.finalizers?.length) return;
    ed.metadata = { ...ed.metadata, finalizers };
    try {
      await this.#replaceObject(ed);
    } catch (err) {
      if (!isNotFound(err)) {
        throw fromApiError(
          `Removing the finalizer of EdgeDevice "${ed.metadata?.namespace}/${ed.metadata?.name}"`,
          err,
        );
      }
    }
  }
}

/**
 * True when `pod` is the virtual pod aranya created for `ed`: its uid is the
 * one recorded on the Node or, before the first record, `ed` controls it by
 * owner reference.
 */
function isOurVirtualPod(pod: V1Pod, ed: EdgeDevice, recorded: string | undefined): boolean {
  const uid = pod.metadata?.uid;
  return uid !== undefined &&
    (uid === recorded || (!recorded && ownedBy(pod.metadata, ed.metadata!.uid!)));
}

/** Says whose Node `node` is, for the NodeOwned=False condition. */
function takenMessage(node: V1Node, namespace: string): string {
  const name = node.metadata?.name;
  const labels = node.metadata?.labels ?? {};
  const owner = node.metadata?.annotations?.[ANNOTATION_OWNER_UID];
  if (owner && labels[LABEL_ROLE] === "EdgeDevice" && labels[LABEL_NAMESPACE]) {
    const other = labels[LABEL_NAMESPACE] === namespace
      ? "an earlier EdgeDevice"
      : `EdgeDevice "${labels[LABEL_NAMESPACE]}/${labels[LABEL_NAME] ?? name}"`;
    return `Node "${name}" already exists and belongs to ${other}; choose another name for this device`;
  }
  return `Node "${name}" already exists and was not created by aranya for this EdgeDevice; choose another name for this device`;
}

/**
 * Annotation on the Node recording which labels and annotations came from
 * spec.node, so that removing one from the spec removes it from the Node.
 */
const ANNOTATION_SPEC_KEYS = "aranya.arhat.dev/node-spec-keys";

function specKeys(value: string | undefined): { labels: string[]; annotations: string[] } {
  try {
    const v = JSON.parse(value ?? "{}") as { labels?: unknown; annotations?: unknown };
    const strings = (x: unknown) =>
      Array.isArray(x) ? x.filter((k): k is string => typeof k === "string") : [];
    return { labels: strings(v.labels), annotations: strings(v.annotations) };
  } catch {
    return { labels: [], annotations: [] };
  }
}

/** `current` without the keys in `drop`, then with `want` over it. */
function merged(
  current: Record<string, string> | undefined,
  drop: string[],
  want: Record<string, string>,
): Record<string, string> {
  const out = { ...current };
  for (const k of drop) delete out[k];
  return { ...out, ...want };
}

function sameEntries(a: Record<string, string>, b: Record<string, string> | undefined): boolean {
  const bb = b ?? {};
  return Object.keys(a).length === Object.keys(bb).length &&
    Object.entries(a).every(([k, v]) => bb[k] === v);
}

/** True for taints the node lifecycle controller and the cloud provider own. */
function isSystemTaint(key: string): boolean {
  return key.startsWith("node.kubernetes.io/") ||
    key.startsWith("node.cloudprovider.kubernetes.io/");
}
