/**
 * Runs the EdgeDevice reconciler: ONE watch on EdgeDevices in all namespaces,
 * or one per watched namespace when `namespaces` lists some (client-node's
 * informer: list, then watch, relist after 410 Gone), feeds a keyed work queue;
 * the reconciler re-reads state for each key. The number of watches does not
 * grow with the number of devices.
 */
import {
  type CoreV1Api,
  type CustomObjectsApi,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  KubernetesObjectApi,
  makeInformer,
} from "@kubernetes/client-node";
import { errorMessage } from "../../common/errors.ts";
import { readySignal } from "../../common/lifecycle.ts";
import { type Logger, nullLogger } from "../../common/log.ts";
import type { EventRecorder } from "../kube/event_recorder.ts";
import { WorkQueue } from "../kube/work_queue.ts";
import { type DeviceHook, type DeviceRemovedHook, EdgeDeviceReconciler } from "./reconciler.ts";
import { type EdgeDevice, GROUP, PLURAL, VERSION } from "./types.ts";

/** Options for {@link EdgeDeviceController}. */
export interface EdgeDeviceControllerOptions {
  kubeconfig: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  /** Generic object client (default: one made from `kubeconfig`, outside any rate limit). */
  objects?: KubernetesObjectApi;
  kubeletAddress: string;
  /** The kubelet port of every Node, unless `kubeletPortFor` is set. */
  kubeletPort: number;
  /**
   * The kubelet port of Node `node` (each node on its own port, see
   * aranya/kubelet/kubelet_server.ts); `current` is the port it advertises now.
   */
  kubeletPortFor?: (node: string, current: number | undefined) => number;
  /** Namespaces to watch; empty or absent: all namespaces. */
  namespaces?: string[];
  /** Where Events go (default: nowhere). */
  events?: EventRecorder;
  /**
   * Called after each successful reconcile of a device that is not being
   * deleted (often: on every change and relist; must be cheap and idempotent).
   */
  onDevice?: DeviceHook;
  /** Called after a device's cleanup, or when it is found gone (idempotent). */
  onDeviceRemoved?: DeviceRemovedHook;
  workers?: number;
  /** Told the result of every reconcile (for metrics). */
  onReconcile?: (result: "success" | "error") => void;
  log?: Logger;
}

/** Watches EdgeDevices and reconciles them. */
export class EdgeDeviceController {
  readonly #o: EdgeDeviceControllerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly queue: WorkQueue;

  constructor(opts: EdgeDeviceControllerOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
    this.queue = new WorkQueue({
      workers: opts.workers ?? 16,
      onResult: opts.onReconcile,
      log: this.#log,
    });
  }

  /** Resolves once the first list completed and the watch runs. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const reconciler = new EdgeDeviceReconciler({
      objects: this.#o.objects ?? KubernetesObjectApi.makeApiClient(this.#o.kubeconfig),
      core: this.#o.core,
      custom: this.#o.custom,
      kubeletAddress: this.#o.kubeletAddress,
      kubeletPort: this.#o.kubeletPort,
      kubeletPortFor: this.#o.kubeletPortFor,
      events: this.#o.events,
      onDevice: this.#o.onDevice,
      onDeviceRemoved: this.#o.onDeviceRemoved,
      log: this.#log,
    });
    const namespaces = [...new Set(this.#o.namespaces ?? [])];
    const informers = namespaces.length
      ? namespaces.map((ns) => this.#informer(signal, ns))
      : [this.#informer(signal)];
    await Promise.all(informers.map((i) => i.start()));
    this.#ready.resolve();
    this.#log.info("EdgeDevice controller running");
    await this.queue.run(signal, (key) => reconciler.reconcile(key));
    await Promise.all(informers.map((i) => i.stop()));
  }

  /** An informer on EdgeDevices in `namespace` (all namespaces when absent) feeding the queue. */
  #informer(signal: AbortSignal, namespace?: string): Informer<EdgeDevice> {
    const custom = this.#o.custom;
    const path = namespace
      ? `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`
      : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    const list = () =>
      (namespace
        ? custom.listNamespacedCustomObject({
          group: GROUP,
          version: VERSION,
          namespace,
          plural: PLURAL,
        })
        : custom.listClusterCustomObject({
          group: GROUP,
          version: VERSION,
          plural: PLURAL,
        })) as Promise<
          KubernetesListObject<EdgeDevice>
        >;
    const informer = makeInformer<EdgeDevice>(this.#o.kubeconfig, path, list);
    const enqueue = (ed: EdgeDevice) =>
      this.queue.add(`${ed.metadata?.namespace}/${ed.metadata?.name}`);
    informer.on("add", enqueue);
    informer.on("update", enqueue);
    informer.on("delete", enqueue);
    informer.on("error", (err: unknown) => {
      this.#log.warn("EdgeDevice watch failed; restarting", {
        namespace: namespace ?? "",
        error: errorMessage(err),
      });
      setTimeout(() => {
        if (!signal.aborted) informer.start().catch(() => {});
      }, 1000);
    });
    return informer;
  }
}
