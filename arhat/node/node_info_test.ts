import assert from "node:assert/strict";
import { fromBinary } from "@bufbuild/protobuf";
import { NotSupportedError } from "@aranya/common/errors";
import { createLogger } from "@aranya/common/log";
import { NodeCondition_Status as S, NodeStatusMsgSchema } from "@aranya/proto/gen/aranya/node_pb";
import { osImageFromOsRelease } from "./host_parsers.ts";
import { collectNodeStatus, encodeNodeStatus } from "./node_info.ts";
import { createSystemProbe, type SystemProbe } from "./system_probe.ts";
import { permittedRunner } from "./testing/sh_runner.ts";

const STATE_DIR = new URL("../../.cache", import.meta.url).pathname;
const GiB = 1024 ** 3;

function fakeProbe(
  files: Record<string, string | Error>,
  over: Partial<SystemProbe> = {},
): SystemProbe {
  return {
    readFile: (path) => {
      const v = files[path];
      return v instanceof Error ? Promise.reject(v) : Promise.resolve(v);
    },
    diskUsage: () => Promise.resolve({ total: 100 * GiB, available: 5 * GiB }),
    memory: () => ({ total: 4 * GiB, available: 3 * GiB }),
    cpuCount: () => 4,
    ...over,
  };
}

const FILES: Record<string, string> = {
  "/etc/os-release": 'PRETTY_NAME="Raspbian GNU/Linux 11 (bullseye)"\nNAME="Raspbian GNU/Linux"\n',
  "/proc/sys/kernel/random/boot_id": "6F1C8D0E-1D69-4E78-9D14-5882A349FBDA\n",
  "/var/lib/dbus/machine-id": "3d1219c7c4c5404aaa1f6d2a48adfda4\n",
  "/proc/sys/kernel/pid_max": "1000\n",
  "/proc/loadavg": "0.10 0.20 0.30 2/100 4242\n",
};

Deno.test("collectNodeStatus() turns probe readings into resources, info and conditions", async () => {
  const status = await collectNodeStatus({
    agentVersion: "0.1.0",
    stateDir: "/var/lib/arhat",
    runtime: { name: "docker", version: "26.1.5" },
    maxPods: 20,
    thresholds: { diskAvailablePercent: 10 },
    probe: fakeProbe(FILES),
  });
  assert.deepEqual(
    { ...status.capacity, $typeName: undefined },
    {
      $typeName: undefined,
      cpuMillis: 4000n,
      memoryBytes: BigInt(4 * GiB),
      storageBytes: BigInt(100 * GiB),
      pods: 20n,
      pids: 1000n,
    },
  );
  // Allocatable = capacity minus the thresholds: 5% memory, 10% disk, 5% pids.
  assert.equal(status.allocatable?.memoryBytes, BigInt(4 * GiB - Math.ceil(4 * GiB * 0.05)));
  assert.equal(status.allocatable?.storageBytes, BigInt(90 * GiB));
  assert.equal(status.allocatable?.pids, 950n);
  assert.equal(status.allocatable?.cpuMillis, 4000n);

  const info = status.systemInfo!;
  assert.equal(info.osImage, "Raspbian GNU/Linux 11 (bullseye)");
  assert.equal(info.bootId, "6f1c8d0e-1d69-4e78-9d14-5882a349fbda");
  assert.equal(info.machineId, "3d1219c7c4c5404aaa1f6d2a48adfda4"); // from the dbus fallback
  assert.equal(info.systemUuid, "");
  assert.equal(info.runtimeName, "docker");
  assert.equal(info.runtimeVersion, "26.1.5");
  assert.equal(info.agentVersion, "0.1.0");
  assert.equal(info.os, Deno.build.os);

  const conditions = Object.fromEntries(status.conditions.map((c) => [c.type, c.status]));
  assert.deepEqual(conditions, {
    Ready: S.HEALTHY,
    MemoryPressure: S.HEALTHY,
    DiskPressure: S.UNHEALTHY, // 5% available, threshold 10%
    PIDPressure: S.HEALTHY,
  });
});

Deno.test("collectNodeStatus() reports what it cannot read instead of failing", async () => {
  const lines: Record<string, unknown>[] = [];
  const denied = new NotSupportedError('Cannot read "/proc/loadavg": no permission');
  const status = await collectNodeStatus({
    agentVersion: "0.1.0",
    stateDir: "/var/lib/arhat",
    runtimeError: "engine unreachable",
    probe: fakeProbe(
      { ...FILES, "/proc/loadavg": denied, "/proc/sys/kernel/random/boot_id": denied },
      {
        memory: () => {
          throw new NotSupportedError("Cannot read memory usage");
        },
        diskUsage: () => Promise.reject(new NotSupportedError("Cannot measure the disk")),
      },
    ),
    log: createLogger({ sink: (l) => lines.push(JSON.parse(l)) }),
  });
  const byType = Object.fromEntries(status.conditions.map((c) => [c.type, c]));
  assert.equal(byType.Ready?.status, S.UNHEALTHY);
  assert.equal(byType.MemoryPressure?.status, S.UNSPECIFIED);
  assert.equal(byType.MemoryPressure?.message, "Cannot read memory usage");
  assert.equal(byType.DiskPressure?.status, S.UNSPECIFIED);
  assert.equal(byType.PIDPressure?.status, S.UNSPECIFIED);
  assert.equal(byType.PIDPressure?.message, 'Cannot read "/proc/loadavg": no permission');
  assert.equal(status.capacity?.memoryBytes, 0n);
  assert.equal(status.capacity?.pids, 1000n);
  assert.equal(status.systemInfo?.bootId, "");
  const warning = lines.find((l) => l.msg === "some node facts could not be read");
  assert.ok(warning, "problems are logged");
  assert.ok((warning.problems as string[]).includes('Cannot read "/proc/loadavg": no permission'));
});

Deno.test("collectNodeStatus() of kind dynamic leaves out system info", async () => {
  const status = await collectNodeStatus({
    agentVersion: "0.1.0",
    stateDir: "/var/lib/arhat",
    kind: "dynamic",
    probe: fakeProbe(FILES),
  });
  assert.equal(status.systemInfo, undefined);
  assert.equal(status.conditions.length, 4);
  assert.equal(status.capacity?.cpuMillis, 4000n);
});

Deno.test("collectNodeStatus() measures this machine", async () => {
  const status = await collectNodeStatus({
    agentVersion: "0.1.0-test",
    stateDir: STATE_DIR,
    runtime: { name: "docker", version: "test" },
    probe: createSystemProbe({ run: permittedRunner }),
  });
  const info = status.systemInfo!;
  const cap = status.capacity!;
  assert.equal(info.os, "linux");
  assert.equal(info.arch, Deno.build.arch === "x86_64" ? "amd64" : "arm64");
  assert.equal(info.archVariant, info.arch === "arm64" ? "v8" : "");
  assert.match(info.machineId, /^[0-9a-f]{32}$/);
  assert.equal(info.machineId, (await Deno.readTextFile("/etc/machine-id")).trim());
  assert.match(info.bootId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(info.osImage, osImageFromOsRelease(await Deno.readTextFile("/etc/os-release")));
  assert.equal(info.kernelVersion, Deno.osRelease());
  assert.equal(info.hostname, Deno.hostname());
  assert.equal(info.agentVersion, "0.1.0-test");

  assert.equal(cap.cpuMillis, BigInt(navigator.hardwareConcurrency * 1000));
  assert.ok(cap.memoryBytes > 64n * 1024n * 1024n, `memory ${cap.memoryBytes}`);
  assert.ok(cap.storageBytes > 0n, `storage ${cap.storageBytes}`);
  assert.ok(cap.pids >= 301n, `pid_max ${cap.pids}`); // the kernel's minimum
  assert.equal(cap.pods, 110n);
  const alloc = status.allocatable!;
  assert.ok(alloc.memoryBytes > 0n && alloc.memoryBytes < cap.memoryBytes);

  assert.deepEqual(status.conditions.map((c) => c.type), [
    "Ready",
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
  ]);
  for (const c of status.conditions) {
    assert.notEqual(c.status, S.UNSPECIFIED, `${c.type} measured: ${c.message}`);
  }
  assert.equal(status.conditions[0]?.status, S.HEALTHY);
});

Deno.test("encodeNodeStatus() produces NodeStatusMsg bytes", async () => {
  const status = await collectNodeStatus({
    agentVersion: "0.1.0",
    stateDir: "/var/lib/arhat",
    probe: fakeProbe(FILES),
  });
  const bytes = encodeNodeStatus(status);
  const decoded = fromBinary(NodeStatusMsgSchema, bytes);
  assert.deepEqual(decoded, status);
  assert.equal(decoded.conditions.length, 4);
  const fromInit = encodeNodeStatus({ capacity: { cpuMillis: 2000n } });
  assert.equal(fromBinary(NodeStatusMsgSchema, fromInit).capacity?.cpuMillis, 2000n);
});
