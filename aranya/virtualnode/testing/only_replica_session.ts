/**
 * Test support: the DeviceSession a single aranya replica makes for a link
 * (the node Lease held through a static membership "replica-a", the kubelet
 * API advertised at 127.0.0.1:10250, a 1 s heartbeat), for tests that need a
 * connected device but not the replicas.
 */
import type { CoordinationApi, CoreApi, CustomObjectsApi } from "../../kube/apis.ts";
import type { Link } from "@aranya/common/link";
import { StaticMembership } from "../../replicas/membership.ts";
import { NodeLease } from "../../replicas/node_lease.ts";
import { DeviceSession } from "../device_session.ts";

/** A session for `link` as the only replica runs it; the caller runs it. */
export function onlyReplicaSession(
  link: Link,
  api: { core: CoreApi; coordination: CoordinationApi; custom: CustomObjectsApi },
): DeviceSession {
  const { core, coordination, custom } = api;
  return new DeviceSession({
    link,
    lease: new NodeLease({
      coordination,
      core,
      node: link.device.split("/")[1]!,
      membership: new StaticMembership("replica-a"),
    }),
    kubelet: { address: "127.0.0.1", port: 10250 },
    core,
    coordination,
    custom,
    heartbeatMs: 1000,
  });
}
