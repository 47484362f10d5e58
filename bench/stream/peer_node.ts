/**
 * The kubelet peer of bench:stream: a real worker node (e2e/cluster/worker_node.ts:
 * the kubelet built from the pinned module, Debian's containerd, a CNI bridge)
 * joined to the bench's control plane beside the aranya device, and how one
 * pod spec is placed on either node. Both nodes get the same spec; only the
 * placement differs: `nodeName` of the device's Node, or `nodeName` of the
 * worker's Node plus the toleration of its taint. `nodeName` on both sides
 * keeps the scheduler out of what is measured.
 */
import type { World } from "@aranya/e2e/edge_world";
import {
  localClusterCa,
  startWorkerNode,
  WORKER_TOLERATION,
  type WorkerNode,
  workerSkipReason,
} from "@aranya/e2e/cluster/worker_node";

/** Which node a pod goes to. */
export type Side = "aranya" | "kubelet";

/** Where the pods of one side go. */
export interface Placement {
  side: Side;
  /** The Node's name. */
  node: string;
}

/**
 * Why a worker node cannot run here (not root, missing packages, an external
 * cluster without its CA key beside the kubeconfig), or undefined when it can;
 * the same checks e2e/cluster/worker_node_test.ts makes.
 */
export function peerSkipReason(): Promise<string | undefined> {
  return workerSkipReason();
}

/**
 * Starts a worker node on the world's control plane (attached: it dies with
 * this process); resolves when its Node is Ready. The caller stops it.
 */
export async function startPeerNode(w: World, say: (line: string) => void): Promise<WorkerNode> {
  const reason = await peerSkipReason();
  if (reason) throw new Error(`The kubelet peer cannot run here: ${reason}`);
  const ca = await localClusterCa(w.cluster.kubeconfig);
  if (!ca) throw new Error(`No cluster CA beside "${w.cluster.kubeconfig}" for the worker node`);
  return await startWorkerNode({ kubeconfig: w.cluster.kubeconfig, ca, log: say });
}

/** `spec` (a Pod's spec) placed on `p`'s node: nodeName, and the worker's toleration there. */
export function placed(
  spec: Record<string, unknown>,
  p: Placement,
): Record<string, unknown> {
  return p.side === "kubelet"
    ? { ...spec, nodeName: p.node, tolerations: [{ ...WORKER_TOLERATION }] }
    : { ...spec, nodeName: p.node };
}
