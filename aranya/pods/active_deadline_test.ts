import assert from "node:assert/strict";
import type { V1Pod } from "@kubernetes/client-node";
import {
  activeDeadlineAt,
  deadlineExceededStatus,
  isDeadlineExceeded,
  MESSAGE_DEADLINE_EXCEEDED,
  REASON_DEADLINE_EXCEEDED,
} from "./active_deadline.ts";

const START = "2026-01-01T00:00:00Z";
const pod = (spec: Partial<V1Pod["spec"]>, status: V1Pod["status"]): V1Pod => ({
  metadata: { name: "p", namespace: "ns", uid: "u" },
  spec: { containers: [{ name: "c" }], ...spec },
  status,
});

Deno.test("active deadline: startTime plus activeDeadlineSeconds, only while it applies", () => {
  const t0 = Date.parse(START);
  assert.equal(
    activeDeadlineAt(pod({ activeDeadlineSeconds: 5 }, { startTime: new Date(START) })),
    t0 + 5000,
  );
  assert.equal(
    activeDeadlineAt(pod({ activeDeadlineSeconds: 5 }, { startTime: START as unknown as Date })),
    t0 + 5000,
    "a watch delivers times as strings",
  );
  assert.equal(activeDeadlineAt(pod({}, { startTime: new Date(START) })), undefined, "no deadline");
  assert.equal(activeDeadlineAt(pod({ activeDeadlineSeconds: 5 }, {})), undefined, "not started");
  assert.equal(
    activeDeadlineAt(
      pod({ activeDeadlineSeconds: 5 }, { phase: "Succeeded", startTime: new Date(START) }),
    ),
    undefined,
  );
  assert.equal(
    activeDeadlineAt(
      pod({ activeDeadlineSeconds: 5 }, {
        phase: "Failed",
        reason: "Evicted",
        startTime: new Date(START),
      }),
    ),
    undefined,
    "failed for another reason",
  );
  const failed = pod({ activeDeadlineSeconds: 5 }, {
    phase: "Failed",
    reason: REASON_DEADLINE_EXCEEDED,
    startTime: new Date(START),
  });
  assert.equal(activeDeadlineAt(failed), t0 + 5000, "kept: nothing of it may run");
  assert.equal(isDeadlineExceeded(failed), true);
});

Deno.test("active deadline: the kubelet's Failed status, containers terminated", () => {
  const p = pod({ activeDeadlineSeconds: 5 }, {
    phase: "Running",
    startTime: new Date(START),
    conditions: [
      { type: "Ready", status: "True", lastTransitionTime: new Date(START) },
      { type: "PodScheduled", status: "True", lastTransitionTime: new Date(START) },
    ],
    containerStatuses: [
      {
        name: "c",
        image: "i",
        imageID: "id",
        containerID: "podman://x",
        ready: true,
        restartCount: 0,
        state: { running: { startedAt: new Date(START) } },
      },
      {
        name: "done",
        image: "i",
        imageID: "id",
        ready: false,
        restartCount: 0,
        state: { terminated: { exitCode: 0, reason: "Completed" } },
      },
    ],
  });
  const s = deadlineExceededStatus(p, "2026-01-01T00:00:06Z") as {
    phase: string;
    reason: string;
    message: string;
    conditions: { type: string; status: string; reason?: string; lastTransitionTime: string }[];
    containerStatuses: { ready: boolean; state: { terminated?: Record<string, unknown> } }[];
  };
  assert.equal(s.phase, "Failed");
  assert.equal(s.reason, "DeadlineExceeded");
  assert.equal(s.message, MESSAGE_DEADLINE_EXCEEDED);
  assert.match(s.message, /^Pod was active on the node longer than the specified deadline$/);
  const ready = s.conditions.find((c) => c.type === "Ready")!;
  assert.deepEqual([ready.status, ready.reason, ready.lastTransitionTime], [
    "False",
    "PodCompleted",
    "2026-01-01T00:00:06Z",
  ]);
  assert.equal(s.conditions.find((c) => c.type === "PodScheduled")?.status, "True");
  assert.deepEqual(s.containerStatuses[0]!.state.terminated, {
    exitCode: 137,
    reason: "Error",
    startedAt: START,
    finishedAt: "2026-01-01T00:00:06Z",
    containerID: "podman://x",
  });
  assert.equal(s.containerStatuses[0]!.ready, false);
  assert.equal(s.containerStatuses[1]!.state.terminated?.reason, "Completed", "kept as it was");
});
