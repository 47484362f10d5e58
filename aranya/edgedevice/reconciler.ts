/**
 * The EdgeDevice reconciler (level-triggered: it re-reads everything for a
 * key and converges):
 *
 * - adds the cleanup finalizer;
 * - ensures the Node named after the device, marked with the EdgeDevice's uid
 *   (annotation aranya.arhat.dev/edge-device-uid): labels
 *   arhat.dev/role=EdgeDevice, arhat.dev/name, arhat.dev/namespace (plus the
 *   spec's labels and annotations), the taint arhat.dev/namespace=<ns>:NoSchedule
 *   unless spec.node.namespaceTaint is false (plus the spec's taints); its status addresses (an InternalIP where aranya
 *   serves the kubelet API) and daemonEndpoints. A Node of that name that
 *   aranya did not create for this EdgeDevice (another namespace's device, a
 *   real node) is never adopted, changed or deleted: the EdgeDevice gets
 *   NodeOwned=False and a Warning NodeNameTaken Event, and nothing else is
 *   provisioned;
 * - ensures the virtual pod (see virtual_pod.ts), created with phase Pending
 *   and recorded by uid in the EdgeDevice's status;
 * - records the node in the EdgeDevice status, with phase Pending and
 *   conditions Connected=False/NodeReady=Unknown until the device connects
 *   (the device session writes the status from then on);
 * - ensures the device's credentials Secret (a random token, kept once made,
 *   controlled by the EdgeDevice through an owner reference), last: a device
 *   can connect only once it exists;
 * - on deletion removes the Node, the Lease, the virtual pod and the Secret
 *   (each only when it is this EdgeDevice's, with its uid as a precondition),
 *   then the finalizer.
 *
 * It records Events on the EdgeDevice: Provisioned, CleanedUp, Warnings
 * NodeNameTaken, VirtualPodNameTaken, CredentialsNotOwned, and ReconcileFailed
 * naming what the API refused (repeats aggregate into one Event). Connected
 * and Disconnected are recorded by the device session, which knows the link.
 *
 * Nodes are cluster-scoped and EdgeDevices namespaced, so owner references
 * cannot tie them together: the finalizer and the uid annotation do.
 */
import { Buffer } from "node:buffer";
import {
  type CoordinationV1Api,
  type CoreV1Api,
  type CustomObjectsApi,
  type KubernetesObjectApi,
  type V1Node,
  type V1NodeStatus,
  type V1Pod,
  type V1Secret,
} from "@kubernetes/client-node";
import { errorMessage } from "../../common/errors.ts";
import { type Logger, nullLogger } from "../../common/log.ts";
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

/** Called after each successful reconcile of a device that is not being deleted. */
export type DeviceHook = (ed: EdgeDevice) => void;
/**
 * Called once a device's cleanup is done, and when a device is found gone;
 * may be called more than once for one device (must be idempotent).
 */
export type DeviceRemovedHook = (namespace: string, name: string) => void;

/** Options for {@link EdgeDeviceReconciler}. */
export interface EdgeDeviceReconcilerOptions {
  objects: KubernetesObjectApi;
  core: CoreV1Api;
  /** For the Node's Lease (removed with the Node). */
  coordination: CoordinationV1Api;
  custom: CustomObjectsApi;
  /** Address where aranya serves the kubelet API for every node (an IP). */
  kubeletAddress: string;
  /** The kubelet port of every Node, unless `kubeletPortFor` is set. */
  kubeletPort: number;
  /** The kubelet port of Node `node` (`current`: the port it advertises now). */
  kubeletPortFor?: (node: string, current: number | undefined) => number;
  /** Where Events go (default: nowhere). */
  events?: EventRecorder;
  onDevice?: DeviceHook;
  onDeviceRemoved?: DeviceRemovedHook;
  /** Called right after the device's Node was (re)created. */
  onNodeCreated?: DeviceRemovedHook;
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
      ed = await this.#o.objects.read<EdgeDevice>({
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name, namespace },
      });
    } catch (err) {
      if (isNotFound(err)) { // gone, and its finalizer already ran (or was removed by hand)
        this.#hook(() => this.#o.onDeviceRemoved?.(namespace, name));
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
      if (ed.metadata.finalizers?.includes(FINALIZER)) {
        await this.#cleanup(ed, namespace, name);
        await event(
          "Normal",
          "CleanedUp",
          `Removed Node "${name}", its Lease, the virtual pod and the credentials Secret`,
        );
        await this.#removeFinalizer(ed);
        this.#log.info("edge device removed", { device: key });
      }
      this.#hook(() => this.#o.onDeviceRemoved?.(namespace, name));
      return;
    }
    if (!ed.metadata?.finalizers?.includes(FINALIZER)) {
      ed.metadata = { ...ed.metadata, finalizers: [...(ed.metadata?.finalizers ?? []), FINALIZER] };
      ed = await this.#replace(ed, `Adding the finalizer to EdgeDevice "${key}"`);
    }
    const uid = ed.metadata!.uid!;
    // The Secret comes last: a device can only connect once it exists, and then
    // its Node, virtual pod and status are there for the device session to write.
    // What this pass created is told in ONE Event (written even when a later step fails), so
    // a new device costs one Event write, not three.
    const created: string[] = [];
    try {
      const node = await this.#ensureNode(ed, namespace, name, () => {
        created.push(`Node "${name}"`);
        this.#hook(() => this.#o.onNodeCreated?.(namespace, name));
        return Promise.resolve();
      });
      if (node.taken !== undefined) {
        // Someone else's Node: nothing of it changes, and nothing is provisioned for this
        // device (no virtual pod bound to that Node, no credentials to dial as it).
        const cond = ed.status?.conditions?.find((c) => c.type === CONDITION_NODE_OWNED);
        if (cond?.status !== "False" || cond.message !== node.taken) {
          ed.status = nodeTakenStatus(ed.status, node.taken, this.#now());
          await this.#replaceStatus(ed);
          event("Warning", REASON_NODE_NAME_TAKEN, node.taken);
        }
        this.#log.warn("edge device's node name is taken", { device: key, why: node.taken });
        return;
      }
      const vp = await this.#ensureVirtualPod(ed, namespace, name);
      if (vp.created) created.push(`the virtual pod "${namespace}/${name}"`);
      if (vp.taken !== undefined) event("Warning", "VirtualPodNameTaken", vp.taken);
      const owned = ed.status?.conditions?.find((c) => c.type === CONDITION_NODE_OWNED);
      if (
        ed.status?.node !== name || owned?.status !== "True" ||
        (vp.uid !== undefined && ed.status?.virtualPod?.uid !== vp.uid)
      ) {
        ed.status = pendingStatus(
          ed.status,
          name,
          this.#now(),
          vp.uid !== undefined ? { name, uid: vp.uid } : undefined,
        );
        await this.#replaceStatus(ed);
      }
      const secret = await this.#ensureSecret(namespace, name, uid);
      if (secret === "created") {
        created.push(`Secret "${credentialsSecretName(name)}" with the device's token`);
      } else if (secret === "foreign") {
        event(
          "Warning",
          "CredentialsNotOwned",
          `Secret "${namespace}/${
            credentialsSecretName(name)
          }" exists but aranya did not create it for this EdgeDevice, so the device cannot authenticate with it; delete it and aranya creates the device's credentials`,
        );
      }
    } finally {
      if (created.length) event("Normal", "Provisioned", `Created ${created.join(", ")}`);
    }
    this.#hook(() => this.#o.onDevice?.(ed));
  }

  /** Runs a caller's hook; its failures are logged, not retried. */
  #hook(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.#log.warn("an edge device hook failed", { error: errorMessage(err) });
    }
  }

  async #replace(ed: EdgeDevice, what: string): Promise<EdgeDevice> {
    try {
      return await this.#o.objects.replace(ed);
    } catch (err) {
      throw fromApiError(what, err);
    }
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
  ): Promise<"created" | "exists" | "foreign"> {
    const secretName = credentialsSecretName(name);
    try {
      const s = await this.#o.core.readNamespacedSecret({ name: secretName, namespace });
      return ownedBy(s.metadata, uid) ? "exists" : "foreign";
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Secret "${namespace}/${secretName}"`, err);
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
    } catch (err) {
      // Made meanwhile: the next pass looks at whose it is.
      if (apiStatus(err) === 409) return "exists";
      throw fromApiError(`Creating Secret "${namespace}/${secretName}"`, err);
    }
    return "created";
  }

  #desiredNode(ed: EdgeDevice, namespace: string, name: string): V1Node {
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
   * Ensures the Node (calling `onCreated` right after creating it) and its
   * addresses. A changed spec.node updates the Node in place (metadata and
   * spec only: the device's link and the status the device session writes are
   * untouched). A Node of that name that aranya did not create for this
   * EdgeDevice (its uid in the owner annotation) is never changed: `taken`
   * says whose it is.
   */
  async #ensureNode(
    ed: EdgeDevice,
    namespace: string,
    name: string,
    onCreated: () => Promise<unknown>,
  ): Promise<{ taken?: string }> {
    const want = this.#desiredNode(ed, namespace, name);
    let created = false;
    let node: V1Node | undefined;
    try {
      node = await this.#o.core.readNode({ name });
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Node "${name}"`, err);
    }
    if (!node) {
      try {
        // Created with its addresses (the API server takes a Node's status on create, as a
        // kubelet registers): the Node never turns Ready without saying where its kubelet is.
        node = await this.#o.core.createNode({
          body: { ...want, status: this.#addressStatus(name, undefined) },
        });
        created = true;
      } catch (err) {
        if (apiStatus(err) !== 409) throw fromApiError(`Creating Node "${name}"`, err);
        // Made meanwhile by someone else: whose it is decides below.
        try {
          node = await this.#o.core.readNode({ name });
        } catch (err) {
          throw fromApiError(`Reading Node "${name}"`, err);
        }
      }
    }
    if (node.metadata?.annotations?.[ANNOTATION_OWNER_UID] !== ed.metadata!.uid) {
      return { taken: takenMessage(node, namespace) };
    }
    if (created) await onCreated();
    else node = await this.#ensureNodeMetadata(node, want);
    await this.#ensureNodeAddress(node);
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

  /** Where aranya serves the kubelet API for Node `name` (keeping `port` when it is still its). */
  #addressStatus(name: string, port: number | undefined): V1NodeStatus {
    return {
      addresses: [{ type: "InternalIP", address: this.#o.kubeletAddress }],
      daemonEndpoints: {
        kubeletEndpoint: { Port: this.#o.kubeletPortFor?.(name, port) ?? this.#o.kubeletPort },
      },
    };
  }

  /**
   * The Node's status names where aranya serves the kubelet API. Others
   * change a new Node at once (the node lifecycle controller's taints, the
   * device session's status), so a conflict re-reads and tries again.
   */
  async #ensureNodeAddress(node: V1Node): Promise<void> {
    const name = node.metadata!.name!;
    for (let attempt = 1;; attempt++) {
      const addr = node.status?.addresses?.[0];
      const port = node.status?.daemonEndpoints?.kubeletEndpoint?.Port;
      const want = this.#addressStatus(name, port);
      if (
        addr?.address === this.#o.kubeletAddress &&
        port === want.daemonEndpoints!.kubeletEndpoint!.Port
      ) return;
      node.status = { ...node.status, ...want };
      try {
        await this.#o.core.replaceNodeStatus({ name, body: node });
        return;
      } catch (err) {
        if (apiStatus(err) !== 409 || attempt >= 4) {
          throw fromApiError(`Updating the status of Node "${name}"`, err);
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
   * device's only when its uid is the one recorded in the EdgeDevice's status
   * (or, before the first record, when this EdgeDevice controls it by owner
   * reference); anything else is a look-alike (`taken`) and left alone.
   */
  async #ensureVirtualPod(
    ed: EdgeDevice,
    namespace: string,
    name: string,
  ): Promise<{ uid?: string; created?: boolean; taken?: string }> {
    let pod: V1Pod | undefined;
    try {
      pod = await this.#o.core.readNamespacedPod({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Pod "${namespace}/${name}"`, err);
    }
    if (!pod) {
      try {
        pod = await this.#o.core.createNamespacedPod({
          namespace,
          body: virtualPod(namespace, name, ed.metadata!.uid!),
        });
        return { uid: pod.metadata?.uid, created: true };
      } catch (err) {
        if (apiStatus(err) !== 409) {
          throw fromApiError(`Creating the virtual pod "${namespace}/${name}"`, err);
        }
        return {}; // made meanwhile: the next pass looks at whose it is
      }
    }
    if (isOurVirtualPod(pod, ed)) return { uid: pod.metadata!.uid };
    return {
      taken:
        `Pod "${namespace}/${name}" exists but is not the virtual pod aranya created for this EdgeDevice; host access through it is refused. Delete it and aranya creates the virtual pod`,
    };
  }

  /**
   * Removes what aranya created for this EdgeDevice, and only that: the Node
   * whose owner annotation is its uid, that Node's Lease, the virtual pod with
   * the recorded uid and the Secret it controls. Each delete carries the uid as
   * a precondition, so an object replaced meanwhile survives.
   */
  async #cleanup(ed: EdgeDevice, namespace: string, name: string): Promise<void> {
    const uid = ed.metadata!.uid!;
    const gone = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (err) {
        if (!isNotFound(err) && apiStatus(err) !== 409) throw fromApiError(`Deleting ${what}`, err);
      }
    };
    const read = async <T>(what: string, f: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await f();
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw fromApiError(`Reading ${what}`, err);
      }
    };
    const node = await read(`Node "${name}"`, () => this.#o.core.readNode({ name }));
    if (node?.metadata?.annotations?.[ANNOTATION_OWNER_UID] === uid) {
      const nodeUid = node.metadata.uid!;
      await gone(
        `Node "${name}"`,
        () => this.#o.core.deleteNode({ name, body: { preconditions: { uid: nodeUid } } }),
      );
      const lease = await read(
        `Lease "kube-node-lease/${name}"`,
        () => this.#o.coordination.readNamespacedLease({ name, namespace: "kube-node-lease" }),
      );
      if (lease && lease.metadata?.ownerReferences?.some((r) => r.uid === nodeUid)) {
        await gone(
          `Lease "kube-node-lease/${name}"`,
          () =>
            this.#o.coordination.deleteNamespacedLease({
              name,
              namespace: "kube-node-lease",
              body: { preconditions: { uid: lease.metadata!.uid } },
            }),
        );
      }
    }
    const pod = await read(
      `Pod "${namespace}/${name}"`,
      () => this.#o.core.readNamespacedPod({ name, namespace }),
    );
    const podUid = pod?.metadata?.uid;
    if (pod && podUid && isOurVirtualPod(pod, ed)) {
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
    const secretName = credentialsSecretName(name);
    const secret = await read(
      `Secret "${namespace}/${secretName}"`,
      () => this.#o.core.readNamespacedSecret({ name: secretName, namespace }),
    );
    if (secret && ownedBy(secret.metadata, uid)) {
      await gone(
        `Secret "${namespace}/${secretName}"`,
        () =>
          this.#o.core.deleteNamespacedSecret({
            name: secretName,
            namespace,
            body: { preconditions: { uid: secret.metadata!.uid } },
          }),
      );
    }
  }

  async #removeFinalizer(ed: EdgeDevice): Promise<void> {
    const finalizers = (ed.metadata?.finalizers ?? []).filter((f) => f !== FINALIZER);
    if (finalizers.length === ed.metadata?.finalizers?.length) return;
    ed.metadata = { ...ed.metadata, finalizers };
    try {
      await this.#o.objects.replace(ed);
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
 * one recorded in the EdgeDevice's status or, before the first record (the
 * status write may not have happened yet), `ed` controls it by owner reference.
 */
function isOurVirtualPod(pod: V1Pod, ed: EdgeDevice): boolean {
  const uid = pod.metadata?.uid;
  const recorded = ed.status?.virtualPod?.uid;
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
