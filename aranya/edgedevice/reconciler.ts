/**
 * The EdgeDevice reconciler (level-triggered: it re-reads everything for a
 * key and converges):
 *
 * - adds the cleanup finalizer;
 * - ensures the device's credentials Secret (a random token, kept once made);
 * - ensures the Node named after the device: labels arhat.dev/role=EdgeDevice,
 *   arhat.dev/name, arhat.dev/namespace (plus the spec's labels and
 *   annotations), the taint arhat.dev/namespace=<ns>:NoSchedule (plus the
 *   spec's taints); its status addresses (an InternalIP where aranya serves the
 *   kubelet API) and daemonEndpoints;
 * - records the node in the EdgeDevice status;
 * - on deletion removes the Node, the Lease, the virtual pod and the Secret,
 *   then the finalizer.
 *
 * Nodes are cluster-scoped and EdgeDevices namespaced, so owner references
 * cannot tie them together: the finalizer does.
 */
import {
  type CoreV1Api,
  type CustomObjectsApi,
  type KubernetesObjectApi,
  type V1Node,
  type V1Pod,
  type V1Secret,
} from "@kubernetes/client-node";
import { type Logger, nullLogger } from "../../common/log.ts";
import { fromApiError, isNotFound } from "../kube/errors.ts";
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
  VIRTUAL_CONTAINER,
  VIRTUAL_IMAGE,
} from "./types.ts";

/** Options for {@link EdgeDeviceReconciler}. */
export interface EdgeDeviceReconcilerOptions {
  objects: KubernetesObjectApi;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  /** Address where aranya serves the kubelet API for every node (an IP). */
  kubeletAddress: string;
  kubeletPort: number;
  log?: Logger;
}

/** Converges one EdgeDevice ("<namespace>/<name>") and what it owns. */
export class EdgeDeviceReconciler {
  readonly #o: EdgeDeviceReconcilerOptions;
  readonly #log: Logger;

  constructor(opts: EdgeDeviceReconcilerOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
  }

  /** Reconciles `key`; throws (to be retried) when the API refuses something. */
  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split("/") as [string, string];
    let ed: EdgeDevice;
    try {
      ed = await this.#o.objects.read<EdgeDevice>({
        apiVersion: API_VERSION,
        kind: KIND,
        metadata: { name, namespace },
      });
    } catch (err) {
      if (isNotFound(err)) return; // gone, and its finalizer already ran
      throw fromApiError(`Reading EdgeDevice "${key}"`, err);
    }
    if (ed.metadata?.deletionTimestamp) {
      await this.#cleanup(namespace, name);
      await this.#removeFinalizer(ed);
      this.#log.info("edge device removed", { device: key });
      return;
    }
    if (!ed.metadata?.finalizers?.includes(FINALIZER)) {
      ed.metadata = { ...ed.metadata, finalizers: [...(ed.metadata?.finalizers ?? []), FINALIZER] };
      ed = await this.#replace(ed, `Adding the finalizer to EdgeDevice "${key}"`);
    }
    await this.#ensureSecret(namespace, name);
    await this.#ensureNode(ed, namespace, name);
    await this.#ensureVirtualPod(namespace, name);
    if (ed.status?.node !== name) {
      ed.status = { ...ed.status, node: name, phase: ed.status?.phase ?? "Pending" };
      await this.#replaceStatus(ed);
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

  async #ensureSecret(namespace: string, name: string): Promise<void> {
    const secretName = credentialsSecretName(name);
    try {
      await this.#o.core.readNamespacedSecret({ name: secretName, namespace });
      return;
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
      throw fromApiError(`Creating Secret "${namespace}/${secretName}"`, err);
    }
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
        annotations: { ...spec.annotations },
      },
      spec: {
        taints: [
          { key: TAINT_NAMESPACE, value: namespace, effect: "NoSchedule" },
          ...(spec.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect })),
        ],
      },
    };
  }

  async #ensureNode(ed: EdgeDevice, namespace: string, name: string): Promise<void> {
    const want = this.#desiredNode(ed, namespace, name);
    let node: V1Node | undefined;
    try {
      node = await this.#o.core.readNode({ name });
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Node "${name}"`, err);
    }
    if (!node) {
      try {
        node = await this.#o.core.createNode({ body: want });
      } catch (err) {
        throw fromApiError(`Creating Node "${name}"`, err);
      }
    } else {
      const labels = { ...node.metadata?.labels, ...want.metadata!.labels };
      const annotations = { ...node.metadata?.annotations, ...want.metadata!.annotations };
      const sameLabels = JSON.stringify(labels) === JSON.stringify(node.metadata?.labels ?? {});
      const sameAnn =
        JSON.stringify(annotations) === JSON.stringify(node.metadata?.annotations ?? {});
      // Taints that Kubernetes manages (node.kubernetes.io/not-ready, ...) stay as they are.
      const system = (node.spec?.taints ?? []).filter((x) => isSystemTaint(x.key));
      const taints = [...want.spec!.taints!, ...system];
      const sameTaints = JSON.stringify(taints) === JSON.stringify(node.spec?.taints ?? []);
      if (!sameLabels || !sameAnn || !sameTaints) {
        node.metadata = { ...node.metadata, labels, annotations };
        node.spec = { ...node.spec, taints };
        try {
          node = await this.#o.core.replaceNode({ name, body: node });
        } catch (err) {
          throw fromApiError(`Updating Node "${name}"`, err);
        }
      }
    }
    const addr = node.status?.addresses?.[0];
    const port = node.status?.daemonEndpoints?.kubeletEndpoint?.Port;
    if (addr?.address !== this.#o.kubeletAddress || port !== this.#o.kubeletPort) {
      node.status = {
        ...node.status,
        addresses: [{ type: "InternalIP", address: this.#o.kubeletAddress }],
        daemonEndpoints: { kubeletEndpoint: { Port: this.#o.kubeletPort } },
      };
      try {
        await this.#o.core.replaceNodeStatus({ name, body: node });
      } catch (err) {
        throw fromApiError(`Updating the status of Node "${name}"`, err);
      }
    }
  }

  /**
   * The virtual pod: pod `<device>` in the device's namespace, bound to its
   * Node, with one container `host` standing for the device itself (kubectl
   * exec/logs/port-forward against it reach the host, when the device allows).
   */
  async #ensureVirtualPod(namespace: string, name: string): Promise<void> {
    try {
      await this.#o.core.readNamespacedPod({ name, namespace });
      return;
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Pod "${namespace}/${name}"`, err);
    }
    const pod: V1Pod = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name,
        namespace,
        labels: { [LABEL_ROLE]: "VirtualPod", [LABEL_NAME]: name },
      },
      spec: {
        nodeName: name,
        automountServiceAccountToken: false,
        containers: [{ name: VIRTUAL_CONTAINER, image: VIRTUAL_IMAGE }],
        tolerations: [
          { key: TAINT_NAMESPACE, operator: "Equal", value: namespace, effect: "NoSchedule" },
          { operator: "Exists", effect: "NoExecute" },
        ],
      },
    };
    try {
      await this.#o.core.createNamespacedPod({ namespace, body: pod });
    } catch (err) {
      if (fromApiError("", err).kind !== "already-exists") {
        throw fromApiError(`Creating the virtual pod "${namespace}/${name}"`, err);
      }
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
      () => this.#o.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }),
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

/** True for taints the node lifecycle controller and the cloud provider own. */
function isSystemTaint(key: string): boolean {
  return key.startsWith("node.kubernetes.io/") ||
    key.startsWith("node.cloudprovider.kubernetes.io/");
}
