import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import type { V1Pod } from "@kubernetes/client-node";
import {
  ContainerStatus_State,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import { podStatusFrom, statusChanged } from "./pod_status.ts";

const pod: V1Pod = {
  metadata: { name: "web", namespace: "ns", uid: "u1" },
  spec: {
    initContainers: [{ name: "init", image: "busybox" }],
    containers: [{ name: "app", image: "busybox" }, { name: "side", image: "busybox" }],
  },
  status: {
    conditions: [{
      type: "PodScheduled",
      status: "True",
      lastTransitionTime: new Date("2026-01-01T00:00:00Z"),
    }],
  },
};

Deno.test("pod status: phase, conditions, container states, IDs, IPs, start time", () => {
  const msg = create(PodStatusMsgSchema, {
    uid: "u1",
    phase: PodStatusMsg_Phase.RUNNING,
    startedAt: "2026-11-28T10:00:00.123456789Z",
    containers: [
      {
        name: "init",
        init: true,
        state: ContainerStatus_State.TERMINATED,
        exitCode: 0,
        containerId: "aaa",
        startedAt: "2026-11-28T10:00:01Z",
        finishedAt: "2026-11-28T10:00:02Z",
      },
      {
        name: "app",
        state: ContainerStatus_State.RUNNING,
        ready: true,
        containerId: "bbb",
        imageId: "sha256:abc",
        restartCount: 2,
        startedAt: "2026-11-28T10:00:03.5Z",
      },
    ],
  });
  const s = podStatusFrom(msg, pod, {
    hostIP: "10.1.1.1",
    runtime: "podman",
    now: "2026-11-28T10:00:05Z",
  });
  assert.equal(s.phase, "Running");
  assert.equal(s.startTime, "2026-11-28T10:00:00Z");
  assert.equal(s.hostIP, "10.1.1.1");
  assert.equal(s.podIP, undefined, "no pod network on the device: no pod IP");
  const app = s.containerStatuses.find((c) => c.name === "app")!;
  assert.deepEqual(app.state, { running: { startedAt: "2026-11-28T10:00:03Z" } });
  assert.equal(app.containerID, "podman://bbb");
  assert.equal(app.imageID, "sha256:abc");
  assert.equal(app.restartCount, 2);
  assert.equal(app.image, "busybox");
  const side = s.containerStatuses.find((c) => c.name === "side")!;
  assert.deepEqual(side.state, { waiting: { reason: "ContainerCreating" } });
  assert.equal(s.initContainerStatuses[0]!.state.terminated!.reason, "Completed");
  const c = Object.fromEntries(s.conditions.map((x) => [x.type, x]));
  assert.equal(c.Initialized!.status, "True");
  assert.equal(c.Ready!.status, "False");
  assert.equal(c.Ready!.reason, "ContainersNotReady");
  assert.equal(c.PodScheduled!.lastTransitionTime, "2026-01-01T00:00:00Z", "kept while unchanged");
  assert.equal(c.Ready!.lastTransitionTime, "2026-11-28T10:00:05Z");
});

Deno.test("pod status: hostNetwork pods get the host's IP; a failed pod", () => {
  const p = structuredClone(pod);
  p.spec!.hostNetwork = true;
  const s = podStatusFrom(
    create(PodStatusMsgSchema, {
      phase: PodStatusMsg_Phase.FAILED,
      containers: [{ name: "app", state: ContainerStatus_State.TERMINATED, exitCode: 3 }],
      reason: "Error",
    }),
    p,
    { hostIP: "10.1.1.1", runtime: "docker" },
  );
  assert.equal(s.phase, "Failed");
  assert.equal(s.podIP, "10.1.1.1");
  assert.equal(s.reason, "Error");
  assert.equal(s.containerStatuses[0]!.state.terminated!.exitCode, 3);
  assert.equal(s.containerStatuses[0]!.state.terminated!.reason, "Error");
  assert.equal(s.conditions.find((x) => x.type === "Ready")!.reason, "PodCompleted");
});

Deno.test("statusChanged: the same status as stored (with API-added fields) is no change", () => {
  const msg = create(PodStatusMsgSchema, {
    phase: PodStatusMsg_Phase.RUNNING,
    containers: [{
      name: "app",
      state: ContainerStatus_State.RUNNING,
      ready: true,
      startedAt: "2026-11-28T10:00:03Z",
    }],
  });
  const s = podStatusFrom(msg, pod, {
    hostIP: "h",
    runtime: "podman",
    now: "2026-11-28T10:00:05Z",
  });
  const stored: V1Pod = {
    ...pod,
    status: JSON.parse(JSON.stringify({ ...s, qosClass: "BestEffort" })),
  };
  for (const cs of stored.status!.containerStatuses!) {
    (cs as { volumeMounts?: unknown[] }).volumeMounts = [];
  }
  assert.equal(statusChanged(stored, s), false);
  const later = podStatusFrom(
    create(PodStatusMsgSchema, { ...msg, phase: PodStatusMsg_Phase.SUCCEEDED }),
    stored,
    { hostIP: "h", runtime: "podman" },
  );
  assert.equal(statusChanged(stored, later), true);
});

Deno.test("pod status: readiness gates keep the pod not Ready until their conditions are True", () => {
  const msg = create(PodStatusMsgSchema, {
    uid: "u1",
    phase: PodStatusMsg_Phase.RUNNING,
    containers: ["app", "side"].map((name) => ({
      name,
      state: ContainerStatus_State.RUNNING,
      ready: true,
      started: true,
    })),
  });
  const gated = structuredClone(pod);
  gated.spec!.initContainers = [];
  gated.spec!.readinessGates = [{ conditionType: "example.com/lb" }];
  const ctx = { hostIP: "10.1.1.1", runtime: "podman", now: "2026-11-28T10:00:05Z" };
  let c = Object.fromEntries(podStatusFrom(msg, gated, ctx).conditions.map((x) => [x.type, x]));
  assert.equal(c.ContainersReady!.status, "True");
  assert.equal(c.Ready!.status, "False");
  assert.equal(c.Ready!.reason, "ReadinessGatesNotReady");
  gated.status!.conditions = [
    ...(gated.status!.conditions ?? []),
    { type: "example.com/lb", status: "True" },
  ];
  c = Object.fromEntries(podStatusFrom(msg, gated, ctx).conditions.map((x) => [x.type, x]));
  assert.equal(c.Ready!.status, "True");
});

Deno.test("pod status: condition messages name the containers, as the kubelet's do", () => {
  const msg = create(PodStatusMsgSchema, {
    uid: "u1",
    phase: PodStatusMsg_Phase.PENDING,
    containers: [{ name: "init", init: true, state: ContainerStatus_State.RUNNING }],
  });
  const ctx = { hostIP: "10.1.1.1", runtime: "podman", now: "2026-11-28T10:00:05Z" };
  const c = Object.fromEntries(podStatusFrom(msg, pod, ctx).conditions.map((x) => [x.type, x]));
  assert.equal(c.Initialized!.message, "containers with incomplete status: [init]");
  assert.equal(c.ContainersReady!.message, "containers with unready status: [app side]");
  assert.equal(c.Ready!.message, "containers with unready status: [app side]");
});
