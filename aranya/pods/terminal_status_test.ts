import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import type { V1Pod } from "@kubernetes/client-node";
import {
  ContainerStatus_State,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import {
  MESSAGE_STATUS_UNKNOWN,
  REASON_STATUS_UNKNOWN,
  terminatedPodStatus,
} from "./terminal_status.ts";

const ctx = { hostIP: "10.1.1.1", runtime: "podman", now: "2026-11-28T10:00:09Z" };

function pod(status: V1Pod["status"] = { phase: "Running" }): V1Pod {
  return {
    metadata: { name: "job-0", namespace: "ns", uid: "u1" },
    spec: {
      restartPolicy: "Never",
      containers: [{ name: "a", image: "busybox" }, { name: "b", image: "busybox" }],
    },
    status: {
      ...status,
      conditions: [
        {
          type: "DisruptionTarget",
          status: "True",
          reason: "EvictionByEvictionAPI",
          lastTransitionTime: new Date("2026-11-28T10:00:05Z"),
        },
        {
          type: "PodReadyToStartContainers",
          status: "True",
          lastTransitionTime: new Date("2026-11-28T10:00:00Z"),
        },
      ],
    },
  };
}

const ended = (name: string, exitCode: number) => ({
  name,
  state: ContainerStatus_State.TERMINATED,
  exitCode,
  containerId: `id-${name}`,
  startedAt: "2026-11-28T10:00:01Z",
  finishedAt: "2026-11-28T10:00:08Z",
  ready: true,
  started: true,
});

Deno.test("terminal status: stopped containers with their exit codes make the pod Failed", () => {
  const msg = create(PodStatusMsgSchema, {
    uid: "u1",
    phase: PodStatusMsg_Phase.DELETED,
    containers: [ended("a", 0), ended("b", 137)],
  });
  const s = terminatedPodStatus(msg, pod(), ctx);
  assert.equal(s.phase, "Failed");
  assert.deepEqual(s.containerStatuses.map((c) => c.state.terminated?.exitCode), [0, 137]);
  assert.deepEqual(s.containerStatuses.map((c) => c.state.terminated?.reason), [
    "Completed",
    "Error",
  ]);
  assert.ok(s.containerStatuses.every((c) => !c.ready && !c.started));
  const cond = Object.fromEntries(s.conditions.map((c) => [c.type, c]));
  assert.equal(cond.Ready?.status, "False");
  assert.equal(cond.Ready?.reason, "PodCompleted");
  assert.equal(cond.ContainersReady?.status, "False");
  assert.equal(cond.PodReadyToStartContainers?.status, "False");
  assert.equal(cond.PodReadyToStartContainers?.lastTransitionTime, "2026-11-28T10:00:09Z");
  assert.equal(cond.DisruptionTarget, undefined, "others' conditions are left to the patch");
});

Deno.test("terminal status: every container exited 0 makes the pod Succeeded", () => {
  const msg = create(PodStatusMsgSchema, {
    uid: "u1",
    phase: PodStatusMsg_Phase.DELETED,
    containers: [ended("a", 0), ended("b", 0)],
  });
  assert.equal(terminatedPodStatus(msg, pod(), ctx).phase, "Succeeded");
  // Whatever the restart policy: the pod is terminal, nothing restarts.
  const always = pod();
  always.spec!.restartPolicy = "Always";
  assert.equal(terminatedPodStatus(msg, always, ctx).phase, "Succeeded");
});

Deno.test("terminal status: containers the device did not report end as ContainerStatusUnknown", () => {
  const msg = create(PodStatusMsgSchema, {
    uid: "u1",
    phase: PodStatusMsg_Phase.DELETED,
    containers: [
      ended("a", 0),
      { name: "b", state: ContainerStatus_State.RUNNING, restartCount: 2, containerId: "x" },
    ],
  });
  const s = terminatedPodStatus(msg, pod(), ctx);
  assert.equal(s.phase, "Failed");
  const b = s.containerStatuses[1]!;
  assert.deepEqual(b.state.terminated, {
    exitCode: 137,
    reason: REASON_STATUS_UNKNOWN,
    message: MESSAGE_STATUS_UNKNOWN,
    startedAt: null,
    finishedAt: null,
  });
  assert.equal(b.restartCount, 2);
  // Nothing known at all (the device no longer had the pod): all unknown, Failed.
  const none = terminatedPodStatus(create(PodStatusMsgSchema, { uid: "u1" }), pod(), ctx);
  assert.equal(none.phase, "Failed");
  assert.ok(
    none.containerStatuses.every((c) => c.state.terminated?.reason === REASON_STATUS_UNKNOWN),
  );
});

Deno.test("terminal status: a terminal phase stays; init containers not started stay waiting", () => {
  const msg = create(PodStatusMsgSchema, { uid: "u1", containers: [ended("a", 0), ended("b", 0)] });
  assert.equal(terminatedPodStatus(msg, pod({ phase: "Failed" }), ctx).phase, "Failed");
  const p = pod({ phase: "Pending" });
  p.spec!.initContainers = [{ name: "i1", image: "busybox" }, { name: "i2", image: "busybox" }];
  const s = terminatedPodStatus(
    create(PodStatusMsgSchema, {
      uid: "u1",
      containers: [{ name: "i1", init: true, state: ContainerStatus_State.RUNNING }],
    }),
    p,
    ctx,
  );
  assert.equal(s.phase, "Failed");
  assert.equal(s.initContainerStatuses[0]!.state.terminated?.reason, REASON_STATUS_UNKNOWN);
  assert.ok(s.initContainerStatuses[1]!.state.waiting, "i2 never started");
  assert.ok(
    s.containerStatuses.every((c) => c.state.waiting),
    "not initialized: regular containers stay waiting",
  );
});
