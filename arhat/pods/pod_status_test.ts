import assert from "node:assert/strict";
import {
  ContainerStatus_State,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerInfo } from "../runtime/runtime.ts";
import { computePodStatus } from "./pod_status.ts";

function ctr(
  name: string,
  role: string,
  state: ContainerInfo["state"],
  exitCode = 0,
  restart = 0,
): ContainerInfo {
  return {
    id: `${name}-${restart}`,
    name,
    image: "img",
    imageId: "sha256:x",
    labels: {
      "arhat.dev/pod-uid": "u1",
      "arhat.dev/pod-namespace": "ns",
      "arhat.dev/pod-name": "p",
      "arhat.dev/container-name": name,
      "arhat.dev/role": role,
      "arhat.dev/spec-hash": "h",
      "arhat.dev/restart-count": String(restart),
    },
    state,
    exitCode,
    createdAt: "2026-01-01T00:00:00Z",
    startedAt: "2026-01-01T00:00:01Z",
    finishedAt: state === "exited" ? "2026-01-01T00:00:02Z" : "0001-01-01T00:00:00Z",
    error: "",
    oomKilled: false,
    pid: 0,
    restartCount: 0,
    ipAddress: "",
  };
}

const intent = (policy: RestartPolicy, init: string[] = []) => ({
  restartPolicy: policy,
  initContainers: init,
  containers: ["app"],
});

Deno.test("pod phase follows Kubernetes semantics", () => {
  const infra = ctr("POD", "infra", "running");
  const cases: [string, ContainerInfo[], ReturnType<typeof intent>, PodStatusMsg_Phase][] = [
    ["nothing yet", [infra], intent(RestartPolicy.ALWAYS), PodStatusMsg_Phase.PENDING],
    [
      "running",
      [infra, ctr("app", "app", "running")],
      intent(RestartPolicy.ALWAYS),
      PodStatusMsg_Phase.RUNNING,
    ],
    [
      "init still running",
      [infra, ctr("i", "init", "running")],
      intent(RestartPolicy.ALWAYS, ["i"]),
      PodStatusMsg_Phase.PENDING,
    ],
    [
      "init failed, Never",
      [infra, ctr("i", "init", "exited", 1)],
      intent(RestartPolicy.NEVER, ["i"]),
      PodStatusMsg_Phase.FAILED,
    ],
    [
      "exited 0, Never",
      [infra, ctr("app", "app", "exited", 0)],
      intent(RestartPolicy.NEVER),
      PodStatusMsg_Phase.SUCCEEDED,
    ],
    [
      "exited 2, Never",
      [infra, ctr("app", "app", "exited", 2)],
      intent(RestartPolicy.NEVER),
      PodStatusMsg_Phase.FAILED,
    ],
    [
      "exited 2, OnFailure (will restart)",
      [infra, ctr("app", "app", "exited", 2)],
      intent(RestartPolicy.ON_FAILURE),
      PodStatusMsg_Phase.RUNNING,
    ],
    [
      "exited 0, OnFailure",
      [infra, ctr("app", "app", "exited", 0)],
      intent(RestartPolicy.ON_FAILURE),
      PodStatusMsg_Phase.SUCCEEDED,
    ],
  ];
  for (const [what, containers, i, want] of cases) {
    assert.equal(computePodStatus(containers, i).phase, want, what);
  }
});

Deno.test("the newest instance counts and restarts are reported", () => {
  const s = computePodStatus([
    ctr("POD", "infra", "running"),
    ctr("app", "app", "exited", 1, 0),
    ctr("app", "app", "running", 0, 1),
  ], intent(RestartPolicy.ALWAYS));
  const app = s.containers.find((c) => c.name === "app")!;
  assert.equal(app.state, ContainerStatus_State.RUNNING);
  assert.equal(app.restartCount, 1);
  assert.equal(app.ready, true);
  assert.equal(s.uid, "u1");
  assert.equal(s.specHash, "h");
});

Deno.test("a container that could not be created shows its waiting reason", () => {
  const s = computePodStatus([ctr("POD", "infra", "running")], {
    ...intent(RestartPolicy.ALWAYS),
    waiting: new Map([["app", { reason: "ErrImagePull", message: 'Pulling "x" was refused' }]]),
  });
  assert.equal(s.containers[0]!.reason, "ErrImagePull");
  assert.equal(s.phase, PodStatusMsg_Phase.PENDING);
});

Deno.test("back-off shows as CrashLoopBackOff only for a container that will restart", () => {
  const infra = ctr("POD", "infra", "running");
  const done = ctr("app", "app", "exited", 0, 1);
  const intent = (policy: RestartPolicy) => ({
    restartPolicy: policy,
    initContainers: [],
    containers: ["app"],
    backoff: new Map([["app", { delayMs: 10_000 }]]),
  });
  // OnFailure and exit 0: finished for good, terminated (not waiting on a back-off).
  let s = computePodStatus([infra, done], intent(RestartPolicy.ON_FAILURE));
  assert.equal(s.containers[0]?.state, ContainerStatus_State.TERMINATED);
  assert.equal(s.phase, PodStatusMsg_Phase.SUCCEEDED);
  // Always: waiting out the back-off.
  s = computePodStatus([infra, done], intent(RestartPolicy.ALWAYS));
  assert.equal(s.containers[0]?.reason, "CrashLoopBackOff");
  assert.equal(s.phase, PodStatusMsg_Phase.RUNNING);
});

Deno.test("app containers wait with PodInitializing while init containers run", () => {
  const infra = ctr("POD", "infra", "running");
  const s = computePodStatus([infra, ctr("init", "init", "running")], {
    restartPolicy: RestartPolicy.ALWAYS,
    initContainers: ["init"],
    containers: ["app"],
  });
  assert.equal(s.containers.find((c) => c.name === "app")?.reason, "PodInitializing");
});

Deno.test("an init container that completed successfully is ready, as the kubelet reports it", () => {
  const s = computePodStatus(
    [
      ctr("POD", "infra", "running"),
      ctr("init", "init", "exited", 0),
      ctr("app", "app", "running"),
    ],
    { restartPolicy: RestartPolicy.ALWAYS, initContainers: ["init"], containers: ["app"] },
  );
  assert.equal(s.containers.find((c) => c.name === "init")?.ready, true);
});
