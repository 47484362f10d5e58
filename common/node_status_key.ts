/**
 * When a device's node status is news (pure). arhat pushes MSG_NODE_STATUS
 * when this key changes, and aranya writes the Node status when a push
 * changes it: conditions (type, status, reason), capacity and allocatable.
 * Condition messages carry current amounts ("3.1 GiB of 8 GiB available")
 * and do not count.
 */
import type { NodeResources, NodeStatusMsg } from "@aranya/proto/gen/aranya/node_pb";

/** The key of `msg`; equal keys mean the Node would show the same conditions and resources. */
export function nodeStatusKey(msg: NodeStatusMsg): string {
  const res = (r: NodeResources | undefined) =>
    r ? [r.cpuMillis, r.memoryBytes, r.storageBytes, r.pods, r.pids].map(String) : null;
  return JSON.stringify([
    msg.conditions.map((c) => [c.type, c.status, c.reason]),
    res(msg.capacity),
    res(msg.allocatable),
  ]);
}
