import assert from "node:assert/strict";
import { disconnectedPodStatus, runningStatus, virtualPod } from "./virtual_pod.ts";
import { VIRTUAL_IMAGE } from "./types.ts";

const t0 = new Date("2030-01-01T00:00:00Z");
const t1 = new Date("2030-01-01T00:05:00Z");
const t2 = new Date("2030-01-01T00:10:00Z");

Deno.test("the virtual pod is bound to the device's Node and starts Pending", () => {
  const pod = virtualPod("ns", "dev", "uid-1");
  assert.equal(pod.spec!.nodeName, "dev");
  assert.deepEqual(pod.spec!.containers, [{ name: "host", image: VIRTUAL_IMAGE }]);
  assert.equal(pod.status!.phase, "Pending");
});

Deno.test("connected: Running and Ready; disconnected: not Ready, still Running", () => {
  const running = runningStatus({ phase: "Pending", qosClass: "BestEffort" }, {
    device: "dev",
    hostIP: "10.0.0.1",
    now: t0,
  });
  assert.equal(running.phase, "Running");
  assert.equal(running.qosClass, "BestEffort", "other fields kept");
  assert.deepEqual(
    running.conditions!.map((c) => [c.type, c.status]),
    [["PodScheduled", "True"], ["Initialized", "True"], ["ContainersReady", "True"], [
      "Ready",
      "True",
    ]],
  );
  const host = running.containerStatuses![0]!;
  assert.equal(host.containerID, "aranya://dev");
  assert.equal(host.ready, true);
  assert.deepEqual(host.state, { running: { startedAt: t0 } });
  assert.equal(running.hostIP, "10.0.0.1");
  assert.deepEqual(running.hostIPs, [{ ip: "10.0.0.1" }]);
  assert.equal(running.startTime, t0);

  const down = disconnectedPodStatus(running, t1);
  assert.equal(down.phase, "Running");
  const ready = down.conditions!.find((c) => c.type === "Ready")!;
  assert.deepEqual([ready.status, ready.reason, ready.lastTransitionTime], [
    "False",
    "EdgeDeviceDisconnected",
    t1,
  ]);
  const scheduled = down.conditions!.find((c) => c.type === "PodScheduled")!;
  assert.equal(scheduled.lastTransitionTime, t0, "unchanged conditions keep their time");
  assert.equal(down.containerStatuses![0]!.ready, false);

  // Reconnected: Ready again from t2; the pod's start time stays.
  const again = runningStatus(down, { device: "dev", now: t2 });
  assert.equal(again.conditions!.find((c) => c.type === "Ready")!.lastTransitionTime, t2);
  assert.equal(again.startTime, t0);
  assert.equal(again.hostIP, "10.0.0.1", "kept when the Node's address is unknown");
});
