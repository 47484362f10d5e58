import assert from "node:assert/strict";
import { containerEvents } from "./container_events.ts";
import type { ContainerStatusJson, PodStatusJson } from "./pod_status.ts";

function status(containers: Partial<ContainerStatusJson>[]): PodStatusJson {
  return {
    phase: "Running",
    conditions: [],
    hostIP: "10.0.0.1",
    hostIPs: [{ ip: "10.0.0.1" }],
    initContainerStatuses: [],
    containerStatuses: containers.map((c) => ({
      name: "app",
      image: "busybox",
      imageID: "",
      ready: false,
      started: false,
      restartCount: 0,
      state: {},
      lastState: {},
      ...c,
    })),
  };
}

const running = (id: string) => ({
  containerID: `podman://${id}`,
  state: { running: { startedAt: "2026-12-06T00:00:00Z" } },
});

Deno.test("a new container instance gets Created and Started, once", () => {
  const first = containerEvents(undefined, status([running("a")]), "p");
  assert.deepEqual(first.map((e) => e.reason), ["Created", "Started"]);
  assert.equal(first[1]!.message, "Started container app");
  // The API already holds instance "a": nothing to repeat (e.g. after an aranya restart).
  const same = containerEvents(
    { containerStatuses: [{ name: "app", ...running("a") }] } as never,
    status([running("a")]),
    "p",
  );
  assert.deepEqual(same, []);
  // A restart is a new instance.
  const again = containerEvents(
    { containerStatuses: [{ name: "app", ...running("a") }] } as never,
    status([running("b")]),
    "p",
  );
  assert.deepEqual(again.map((e) => e.reason), ["Created", "Started"]);
});

Deno.test("a container that ran and ended between two writes still gets Started", () => {
  const ev = containerEvents(
    {
      containerStatuses: [{ name: "app", state: { waiting: { reason: "ContainerCreating" } } }],
    } as never,
    status([{
      containerID: "docker://c",
      state: {
        terminated: { exitCode: 0, startedAt: "2026-12-06T00:00:00Z", containerID: "docker://c" },
      },
    }]),
    "p",
  );
  assert.deepEqual(ev.map((e) => e.reason), ["Created", "Started"]);
});

Deno.test("waiting failures are Warnings, told when the reason changes", () => {
  const waiting = (reason: string, message?: string) => ({
    state: { waiting: { reason, ...(message ? { message } : {}) } },
  });
  const crash = containerEvents(undefined, status([waiting("CrashLoopBackOff")]), "ns/p");
  assert.deepEqual(crash, [{
    type: "Warning",
    reason: "BackOff",
    message: "Back-off restarting failed container app in pod ns/p",
  }]);
  const cfg = containerEvents(
    undefined,
    status([waiting("CreateContainerConfigError", 'secret "s" not found')]),
    "p",
  );
  assert.deepEqual(cfg.map((e) => [e.type, e.reason, e.message]), [
    ["Warning", "Failed", 'Error: secret "s" not found'],
  ]);
  const pull = containerEvents(undefined, status([waiting("ImagePullBackOff")]), "p");
  assert.equal(pull[0]?.message, 'Back-off pulling image "busybox"');
  const unchanged = containerEvents(
    {
      containerStatuses: [{ name: "app", state: { waiting: { reason: "CrashLoopBackOff" } } }],
    } as never,
    status([waiting("CrashLoopBackOff")]),
    "p",
  );
  assert.deepEqual(unchanged, [], "the same waiting reason is not told again");
  assert.deepEqual(containerEvents(undefined, status([waiting("ContainerCreating")]), "p"), []);
});
