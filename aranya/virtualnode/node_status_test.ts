import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { NodeCondition_Status, NodeStatusMsgSchema } from "@aranya/proto/gen/aranya/node_pb";
import {
  agentInfoFrom,
  disconnectedStatus,
  nodeLabelsFrom,
  nodeStatusFrom,
  REASON_DISCONNECTED,
} from "./node_status.ts";

Deno.test("device conditions map onto Node conditions; pressure is inverted", () => {
  const msg = create(NodeStatusMsgSchema, {
    systemInfo: {
      os: "linux",
      arch: "arm64",
      runtimeName: "docker",
      runtimeVersion: "20.10",
      agentVersion: "0.1.0",
    },
    capacity: { cpuMillis: 4000n, memoryBytes: 1024n, pods: 10n },
    conditions: [
      { type: "Ready", status: NodeCondition_Status.HEALTHY },
      { type: "MemoryPressure", status: NodeCondition_Status.UNHEALTHY, reason: "LowMemory" },
      { type: "DiskPressure", status: NodeCondition_Status.UNSPECIFIED },
    ],
  });
  const s = nodeStatusFrom(msg, { addresses: [{ type: "InternalIP", address: "10.0.0.9" }] });
  const byType = Object.fromEntries(s.conditions!.map((c) => [c.type, c]));
  assert.equal(byType.Ready!.status, "True");
  assert.equal(byType.MemoryPressure!.status, "True");
  assert.equal(byType.MemoryPressure!.reason, "LowMemory");
  assert.equal(byType.DiskPressure!.status, "Unknown");
  assert.equal(s.capacity!.cpu, "4000m");
  assert.equal(s.nodeInfo!.containerRuntimeVersion, "docker://20.10");
  assert.equal(s.nodeInfo!.kubeletVersion, "arhat/0.1.0");
  assert.deepEqual(s.addresses, [{ type: "InternalIP", address: "10.0.0.9" }]);

  // The EdgeDevice's spec.pod.allocatable caps the pod capacity (and stands in for none).
  assert.equal(nodeStatusFrom(msg, {}, new Date(), 3).capacity!.pods, "3");
  assert.equal(nodeStatusFrom(msg, {}, new Date(), 50).capacity!.pods, "10");
  const none = create(NodeStatusMsgSchema, { capacity: { cpuMillis: 1n } });
  assert.equal(nodeStatusFrom(none, {}, new Date(), 7).allocatable!.pods, "7");

  // The well-known labels, with the beta aliases.
  assert.deepEqual(nodeLabelsFrom(msg), {
    "kubernetes.io/os": "linux",
    "beta.kubernetes.io/os": "linux",
    "kubernetes.io/arch": "arm64",
    "beta.kubernetes.io/arch": "arm64",
  });
  assert.deepEqual(nodeLabelsFrom(none), {});
});

Deno.test("a lost link makes Ready False with reason EdgeDeviceDisconnected, once", () => {
  const t0 = new Date("2026-01-01T00:00:00Z");
  const a = disconnectedStatus({
    conditions: [{ type: "Ready", status: "True", lastTransitionTime: t0 }],
  }, t0);
  const ready = a.conditions!.find((c) => c.type === "Ready")!;
  assert.equal(ready.status, "False");
  assert.equal(ready.reason, REASON_DISCONNECTED);
  const t1 = new Date("2026-01-01T00:05:00Z");
  const b = disconnectedStatus(a, t1);
  assert.equal(b.conditions!.find((c) => c.type === "Ready")!.lastTransitionTime, t0);
  assert.equal(disconnectedStatus(undefined).conditions![0]!.reason, REASON_DISCONNECTED);
});

Deno.test("the agent from the device's system info", () => {
  const msg = create(NodeStatusMsgSchema, {
    systemInfo: {
      os: "linux",
      arch: "arm",
      archVariant: "v7",
      runtimeName: "podman",
      runtimeVersion: "5.0.1",
      agentVersion: "0.2.0",
    },
  });
  assert.deepEqual(agentInfoFrom(msg), {
    version: "0.2.0",
    os: "linux",
    arch: "arm/v7",
    runtime: "podman://5.0.1",
  });
  assert.equal(agentInfoFrom(create(NodeStatusMsgSchema, {})), undefined);
});
