import assert from "node:assert/strict";
import { InvalidInputError, NotFoundError, UnavailableError } from "@aranya/common/errors";
import { ContainerStatus_State, PodStatusMsg_Phase } from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerStats } from "../runtime/runtime.ts";
import { readPodStats } from "./pod_stats.ts";
import type { ContainerStatusInit, PodStatusInit } from "./pod_status.ts";

const STATS: ContainerStats = {
  timeMs: 1000,
  cpuUsageCoreNanoseconds: 5,
  memoryUsageBytes: 20,
  memoryWorkingSetBytes: 10,
};

function container(name: string, id: string, state: ContainerStatus_State): ContainerStatusInit {
  return {
    name,
    containerId: id,
    image: "",
    imageId: "",
    state,
    createdAt: "",
    startedAt: "2024-01-02T03:04:05.123456789Z",
    finishedAt: "",
    exitCode: 0,
    restartCount: 0,
    reason: "",
    message: "",
    ready: true,
    init: false,
    started: true,
  };
}

function pod(uid: string, containers: ContainerStatusInit[]): PodStatusInit {
  return {
    uid,
    namespace: "ns",
    name: `pod-${uid}`,
    phase: PodStatusMsg_Phase.RUNNING,
    containers,
    podIp: "",
    hostIp: "",
    startedAt: "",
    reason: "",
    message: "",
    specHash: "",
  };
}

Deno.test("readPodStats() reads running containers only and skips what vanished", async () => {
  const R = ContainerStatus_State.RUNNING;
  const asked: string[] = [];
  const result = await readPodStats({
    pods: {
      list: () =>
        Promise.resolve([
          pod("a", [
            container("app", "id-app", R),
            container("done", "id-done", ContainerStatus_State.TERMINATED),
            container("waiting", "", ContainerStatus_State.WAITING),
            container("gone", "id-gone", R),
            container("stopped", "id-stopped", R),
            container("broken", "id-broken", R),
          ]),
          pod("b", [container("only", "id-b-gone", R)]),
        ]),
    },
    runtime: {
      stats: (id) => {
        asked.push(id);
        if (id === "id-gone" || id === "id-b-gone") return Promise.reject(new NotFoundError("x"));
        if (id === "id-stopped") return Promise.reject(new InvalidInputError("x"));
        if (id === "id-broken") return Promise.reject(new UnavailableError("engine down"));
        return Promise.resolve(STATS);
      },
    },
  });
  assert.deepEqual(asked.sort(), ["id-app", "id-b-gone", "id-broken", "id-gone", "id-stopped"]);
  assert.deepEqual(result.pods, [{
    uid: "a",
    namespace: "ns",
    name: "pod-a",
    startTimeMs: 0,
    containers: [{
      name: "app",
      id: "id-app",
      startTimeMs: Date.parse("2024-01-02T03:04:05.123Z"),
      stats: STATS,
    }],
  }]);
  assert.deepEqual(result.problems, ['Container "broken" of pod "ns/pod-a": engine down']);
});
