/**
 * The EdgeDevice reconciler (level-triggered: it re-reads everything for a
 * key and converges):
 *
 * - adds the cleanup finalizer;
 * - ensures the Node named after the device: labels arhat.dev/role=EdgeDevice,
 *   arhat.dev/name, arhat.dev/namespace (plus the spec's labels and
 *   annotations), the taint arhat.dev/namespace=<ns>:NoSchedule (plus the
 *   spec's taints); its status addresses (an InternalIP where aranya serves the
 *   kubelet API) and daemonEndpoints;
 * - ensures the virtual pod (see virtual_pod.ts), created with phase Pending;
 * - records the node in the EdgeDevice status, with phase Pending and
 *   conditions Connected=False/NodeReady=Unknown until the device connects
 *   (the device session writes the status from then on);
 * - ensures the device's credentials Secret (a random token, kept once made),
 *   last: a device can connect only once it exists;
 * - on deletion removes the Node, the Lease, the virtual pod and the Secret,
 *   then the finalizer.
 *
 * It records Events on the EdgeDevice: NodeCreated, CredentialsCreated,
 * VirtualPodCreated, CleanedUp, and a Warning ReconcileFailed naming what the
 * API refused (repeats aggregate into one Event). Connected and Disconnected
 * are recorded by the device session, which knows the link.
 *
 * Nodes are cluster-scoped and EdgeDevices namespaced, so owner references
 * cannot tie them together: the finalizer does.
 */
import {
  type CoreV1Api,
  type CustomObjectsApi,
  type KubernetesObjectApi,
  type V1Node,
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
import { pendingStatus } from "./edge_device_status.ts";
import {
  API_VERSION,
  credentialsSecretName,
  type EdgeDevice,
  FINALIZER,
  GROUP,
  KIND,
  LABEL_NAME,
  LABEL_NAMESPACE,
  LABEL_ROLE,
  PLURAL,
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
        await this.#cleanup(namespace, name);
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
    // The Secret comes last: a device can only connect once it exists, and then
    // its Node, virtual pod and status are there for the device session to write.
    // What this pass created is told in ONE Event (written even when a later step fails), so
    // a new device costs one Event write, not three.
    const created: string[] = [];
    try {
      await this.#ensureNode(ed, namespace, name, () => {
        created.push(`Node "${name}"`);
        return Promise.resolve();
      });
      if (await this.#ensureVirtualPod(namespace, name)) {
        created.push(`the virtual pod "${namespace}/${name}"`);
      }
      if (ed.status?.node !== name) {
        ed.status = pendingStatus(ed.status, name, this.#now());
        await this.#replaceStatus(ed);
      }
      if (await this.#ensureSecret(namespace, name)) {
        created.push(`Secret "${credentialsSecretName(name)}" with the device's token`);
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

  /** Resolves true when it created the Secret. */
  async #ensureSecret(namespace: string, name: string): Promise<boolean> {
    const secretName = credentialsSecretName(name);
    try {
      await this.#o.core.readNamespacedSecret({ name: secretName, namespace });
      return false;
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Secret "${namespace}/${secretName}"`, err);
    }
    const token = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))))
      .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
    const secret: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: secretName,
        namespace,
        labels: { [LABEL_ROLE]: "EdgeDevice", [LABEL_NAME]: name },
      },
      type: "Opaque",
      stringData: { token },
    };
    try {
      await this.#o.core.createNamespacedSecret({ namespace, body: secret });
    } catch (err) {
      // Made meanwhile by someone else: the token there stands.
      if (apiStatus(err) === 409) return false;
      throw fromApiError(`Creating Secret "${namespace}/${secretName}"`, err);
    }
    return true;
  }

  #desiredNode(ed: EdgeDevice, namespace: string, name: string): V1Node {
    const spec = ed.spec?.node ?? {};
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
        },
        annotations: {
          ...spec.annotations,
          [ANNOTATION_SPEC_KEYS]: JSON.stringify({
            labels: Object.keys(spec.labels ?? {}).sort(),
            annotations: Object.keys(spec.annotations ?? {}).sort(),
          }),
        },
      },
      spec: {
        taints: [
          { key: TAINT_NAMESPACE, value: namespace, effect: "NoSchedule" },
          ...(spec.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect })),
        ],
      },
    };
  }

  /**
   * Ensures the Node (calling `onCreated` right after creating it) and its
   * addresses. A changed spec.node updates the Node in place (metadata and
   * spec only: the device's link and the status the device session writes are
   * untouched).
   */
  async #ensureNode(
    ed: EdgeDevice,
    namespace: string,
    name: string,
    onCreated: () => Promise<unknown>,
  ): Promise<void> {
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
        node = await this.#o.core.createNode({ body: want });
        created = true;
      } catch (err) {
        if (apiStatus(err) !== 409) throw fromApiError(`Creating Node "${name}"`, err);
        // Made meanwhile by someone else: converge that one.
        try {
          node = await this.#o.core.readNode({ name });
        } catch (err) {
          throw fromApiError(`Reading Node "${name}"`, err);
        }
      }
    }
    if (created) await onCreated();
    else node = await this.#ensureNodeMetadata(node, want);
    await this.#ensureNodeAddress(node);
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
   * The Node's status names where aranya serves the kubelet API. Others
   * change a new Node at once (the node lifecycle controller's taints, the
   * device session's status), so a conflict re-reads and tries again.
   */
  async #ensureNodeAddress(node: V1Node): Promise<void> {
    const name = node.metadata!.name!;
    for (let attempt = 1;; attempt++) {
      const addr = node.status?.addresses?.[0];
      const port = node.status?.daemonEndpoints?.kubeletEndpoint?.Port;
      const want = this.#o.kubeletPortFor?.(name, port) ?? this.#o.kubeletPort;
      if (addr?.address === this.#o.kubeletAddress && port === want) return;
      node.status = {
        ...node.status,
        addresses: [{ type: "InternalIP", address: this.#o.kubeletAddress }],
        daemonEndpoints: { kubeletEndpoint: { Port: want } },
      };
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

  /** Ensures the virtual pod (see virtual_pod.ts); resolves true when it created it. */
  async #ensureVirtualPod(namespace: string, name: string): Promise<boolean> {
    try {
      await this.#o.core.readNamespacedPod({ name, namespace });
      return false;
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Pod "${namespace}/${name}"`, err);
    }
    try {
      await this.#o.core.createNamespacedPod({ namespace, body: virtualPod(namespace, name) });
      return true;
    } catch (err) {
      if (apiStatus(err) !== 409) {
        throw fromApiError(`Creating the virtual pod "${namespace}/${name}"`, err);
      }
      return false;
    }
  }

  async #cleanup(namespace: string, name: string): Promise<void> {
    const gone = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (err) {
        if (!isNotFound(err)) throw fromApiError(`Deleting ${what}`, err);
      }
    };
    await gone(`Node "${name}"`, () => this.#o.core.deleteNode({ name }));
    await gone(`Lease "kube-node-lease/${name}"`, () =>
      this.#o.objects.delete({
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name, namespace: "kube-node-lease" },
      }));
    await gone(
      `Pod "${namespace}/${name}"`,
      // In the body: the API server reads delete options from the body when there is one.
      () => this.#o.core.deleteNamespacedPod({ name, namespace, body: { gracePeriodSeconds: 0 } }),
    );
    await gone(
      `Secret "${namespace}/${credentialsSecretName(name)}"`,
      () => this.#o.core.deleteNamespacedSecret({ name: credentialsSecretName(name), namespace }),
    );
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
