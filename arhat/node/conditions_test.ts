import assert from "node:assert/strict";
import { NodeCondition_Status as S } from "@aranya/proto/gen/aranya/node_pb";
import {
  DEFAULT_THRESHOLDS,
  evaluateNodeConditions,
  formatBytes,
  type NodeMeasurements,
} from "./conditions.ts";

const GiB = 1024 ** 3;
const healthy: NodeMeasurements = {
  memory: { ok: true, value: { total: 8 * GiB, available: 4 * GiB } },
  disk: { ok: true, value: { total: 100 * GiB, available: 50 * GiB } },
  pids: { ok: true, value: { max: 32768, used: 200 } },
};

/** type -> [status, reason] of each condition. */
function summary(m: NodeMeasurements, t = DEFAULT_THRESHOLDS) {
  return Object.fromEntries(
    evaluateNodeConditions(m, t).map((c) => [c.type, [c.status, c.reason]]),
  );
}

Deno.test("evaluateNodeConditions() reports each pressure against its threshold", () => {
  const cases: [string, NodeMeasurements, Record<string, [S, string]>][] = [
    ["all healthy", healthy, {
      Ready: [S.HEALTHY, "ArhatReady"],
      MemoryPressure: [S.HEALTHY, "ArhatHasSufficientMemory"],
      DiskPressure: [S.HEALTHY, "ArhatHasNoDiskPressure"],
      PIDPressure: [S.HEALTHY, "ArhatHasSufficientPID"],
    }],
    ["memory 4.9% available (threshold 5%)", {
      ...healthy,
      memory: { ok: true, value: { total: 1000, available: 49 } },
    }, {
      Ready: [S.HEALTHY, "ArhatReady"],
      MemoryPressure: [S.UNHEALTHY, "ArhatHasInsufficientMemory"],
      DiskPressure: [S.HEALTHY, "ArhatHasNoDiskPressure"],
      PIDPressure: [S.HEALTHY, "ArhatHasSufficientPID"],
    }],
    ["memory exactly at the threshold", {
      ...healthy,
      memory: { ok: true, value: { total: 1000, available: 50 } },
    }, {
      Ready: [S.HEALTHY, "ArhatReady"],
      MemoryPressure: [S.HEALTHY, "ArhatHasSufficientMemory"],
      DiskPressure: [S.HEALTHY, "ArhatHasNoDiskPressure"],
      PIDPressure: [S.HEALTHY, "ArhatHasSufficientPID"],
    }],
    ["disk 9% available (threshold 10%), pids 96% used", {
      ...healthy,
      disk: { ok: true, value: { total: 100, available: 9 } },
      pids: { ok: true, value: { max: 1000, used: 960 } },
    }, {
      Ready: [S.HEALTHY, "ArhatReady"],
      MemoryPressure: [S.HEALTHY, "ArhatHasSufficientMemory"],
      DiskPressure: [S.UNHEALTHY, "ArhatHasDiskPressure"],
      PIDPressure: [S.UNHEALTHY, "ArhatHasInsufficientPID"],
    }],
    ["runtime down, nothing measurable", {
      memory: { ok: false, error: "no permission" },
      disk: { ok: false, error: "no statfs" },
      pids: { ok: true, value: { max: 0, used: 0 } },
      runtimeError: "connect ENOENT /var/run/docker.sock",
    }, {
      Ready: [S.UNHEALTHY, "ContainerRuntimeUnavailable"],
      MemoryPressure: [S.UNSPECIFIED, "ArhatCannotMeasureMemory"],
      DiskPressure: [S.UNSPECIFIED, "ArhatCannotMeasureDisk"],
      PIDPressure: [S.UNSPECIFIED, "ArhatCannotMeasurePID"],
    }],
  ];
  for (const [name, m, want] of cases) assert.deepEqual(summary(m), want, name);
});

Deno.test("evaluateNodeConditions() honours custom thresholds; 0 turns a check off", () => {
  const m: NodeMeasurements = {
    memory: { ok: true, value: { total: 100, available: 20 } },
    disk: { ok: true, value: { total: 100, available: 0 } },
    pids: { ok: true, value: { max: 100, used: 100 } },
  };
  const s = summary(m, {
    memoryAvailablePercent: 25,
    diskAvailablePercent: 0,
    pidsAvailablePercent: 0,
  });
  assert.deepEqual(s.MemoryPressure, [S.UNHEALTHY, "ArhatHasInsufficientMemory"]);
  assert.deepEqual(s.DiskPressure, [S.HEALTHY, "ArhatHasNoDiskPressure"]);
  assert.deepEqual(s.PIDPressure, [S.HEALTHY, "ArhatHasSufficientPID"]);
});

Deno.test("evaluateNodeConditions() explains each condition in its message", () => {
  const byType = Object.fromEntries(
    evaluateNodeConditions({
      ...healthy,
      memory: { ok: true, value: { total: 8 * GiB, available: 0.25 * GiB } },
      disk: { ok: false, error: 'Cannot measure the disk of "/var/lib/arhat": no statfs' },
      runtimeError: "engine unreachable",
    }).map((c) => [c.type, c.message]),
  );
  assert.equal(byType.Ready, "container runtime is down: engine unreachable");
  assert.equal(
    byType.MemoryPressure,
    "256.0 MiB of 8.0 GiB memory available (3.1%), below the 5% threshold",
  );
  assert.equal(byType.DiskPressure, 'Cannot measure the disk of "/var/lib/arhat": no statfs');
  assert.equal(
    byType.PIDPressure,
    "32568 of 32768 process ids available (99.4%), at or above the 5% threshold",
  );
});

Deno.test("formatBytes() uses binary units", () => {
  const cases: [number, string][] = [[0, "0 B"], [1023, "1023 B"], [1536, "1.5 KiB"], [
    5 * GiB,
    "5.0 GiB",
  ]];
  for (const [n, want] of cases) assert.equal(formatBytes(n), want);
});
