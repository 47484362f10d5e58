/**
 * One list+watch (client-node's informer) with a restart after errors, for
 * the bench's own observers: one watch per resource, never one per object.
 */
import type { KubeConfig, KubernetesListObject, KubernetesObject } from "@kubernetes/client-node";
import { makeInformer } from "@kubernetes/client-node";

/** Options of {@link watchObjects}. */
export interface WatchObjectsOptions<T extends KubernetesObject> {
  kubeconfig: KubeConfig;
  /** Collection path, e.g. "/api/v1/nodes". */
  path: string;
  /** The matching LIST call (with the same label selector). */
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  /** Called for every added or changed object (also for the objects of the first list). */
  onUpsert: (obj: T) => void;
  onDelete: (obj: T) => void;
  /** Told about a watch failure before the restart. */
  onError?: (err: unknown) => void;
}

/** A running watch. */
export interface ObjectWatch {
  stop(): Promise<void>;
}

/** Lists and watches; resolves once the first list was delivered and the watch runs. */
export async function watchObjects<T extends KubernetesObject>(
  o: WatchObjectsOptions<T>,
): Promise<ObjectWatch> {
  const informer = makeInformer<T>(o.kubeconfig, o.path, o.list, o.labelSelector);
  let stopped = false;
  informer.on("add", o.onUpsert);
  informer.on("update", o.onUpsert);
  informer.on("delete", o.onDelete);
  informer.on("error", (err: unknown) => {
    o.onError?.(err);
    setTimeout(() => {
      if (!stopped) informer.start().catch(() => {});
    }, 500);
  });
  await informer.start();
  return {
    stop: async () => {
      stopped = true;
      await informer.stop();
    },
  };
}
