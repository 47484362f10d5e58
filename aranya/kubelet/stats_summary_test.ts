import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { StatsMsgSchema } from "@aranya/proto/gen/aranya/stats_pb";
import { podUsage, rfc3339, toSummary } from "./stats_summary.ts";

/** 2021-06-22T21:11:18.302Z */
const T = 1624396278302n;
const TIME = "2021-06-22T21:11:18Z";

function msg(init: MessageInitShape<typeof StatsMsgSchema>) {
  return create(StatsMsgSchema, init);
}

const FULL = msg({
  node: {
    startTimeUnixMs: T - 3_600_000n,
    cpu: { timeUnixMs: T, usageCoreNanoseconds: 12_500_000_000n, usageNanoCores: 250_000_000n },
    memory: {
      timeUnixMs: T,
      usageBytes: 3_000_000n,
      workingSetBytes: 2_000_000n,
      availableBytes: 6_000_000n,
      rssBytes: 1_000_000n,
    },
    fs: { timeUnixMs: T, capacityBytes: 100n, availableBytes: 60n, usedBytes: 40n },
  },
  pods: [{
    podUid: "uid-a",
    namespace: "edge",
    name: "pod-a",
    startTimeUnixMs: T - 60_000n,
    containers: [{
      name: "app",
      startTimeUnixMs: T - 30_000n,
      cpu: { timeUnixMs: T, usageCoreNanoseconds: 2_000_000_000n, usageNanoCores: 1_000n },
      memory: { timeUnixMs: T, usageBytes: 300n, workingSetBytes: 200n, rssBytes: 100n },
    }, {
      name: "sidecar",
      startTimeUnixMs: T - 20_000n,
      cpu: { timeUnixMs: T + 5n, usageCoreNanoseconds: 500_000_000n },
      memory: { timeUnixMs: T + 5n, usageBytes: 30n, workingSetBytes: 20n },
    }],
  }],
});

Deno.test("toSummary() maps node, pods and containers to the stats/v1alpha1 field names", () => {
  const s = toSummary("edge-node", FULL);
  assert.deepEqual(s.node, {
    nodeName: "edge-node",
    startTime: "2021-06-22T20:11:18Z",
    cpu: { time: TIME, usageNanoCores: 250_000_000, usageCoreNanoSeconds: 12_500_000_000 },
    memory: {
      time: TIME,
      availableBytes: 6_000_000,
      usageBytes: 3_000_000,
      workingSetBytes: 2_000_000,
      rssBytes: 1_000_000,
    },
    fs: { time: TIME, availableBytes: 60, capacityBytes: 100, usedBytes: 40 },
  });
  assert.equal(s.pods.length, 1);
  const pod = s.pods[0]!;
  assert.deepEqual(pod.podRef, { name: "pod-a", namespace: "edge", uid: "uid-a" });
  assert.equal(pod.startTime, "2021-06-22T21:10:18Z");
  assert.deepEqual(pod.containers, [{
    name: "app",
    startTime: "2021-06-22T21:10:48Z",
    cpu: { time: TIME, usageNanoCores: 1_000, usageCoreNanoSeconds: 2_000_000_000 },
    memory: { time: TIME, usageBytes: 300, workingSetBytes: 200, rssBytes: 100 },
  }, {
    name: "sidecar",
    startTime: "2021-06-22T21:10:58Z",
    cpu: { time: TIME, usageCoreNanoSeconds: 500_000_000 },
    memory: { time: TIME, usageBytes: 30, workingSetBytes: 20 },
  }]);
  // The pod is the sum of its containers; a rate or rss only when every container has one.
  assert.deepEqual(pod.cpu, { time: TIME, usageCoreNanoSeconds: 2_500_000_000 });
  assert.deepEqual(pod.memory, { time: TIME, usageBytes: 330, workingSetBytes: 220 });
});

Deno.test("toSummary() JSON has the kubelet's exact keys and no nulls", () => {
  const json = JSON.stringify(toSummary("n", FULL));
  for (
    const key of [
      '"nodeName":"n"',
      '"usageCoreNanoSeconds":12500000000',
      '"usageNanoCores":250000000',
      '"workingSetBytes":2000000',
      '"availableBytes":6000000',
      '"capacityBytes":100',
      '"podRef":{"name":"pod-a","namespace":"edge","uid":"uid-a"}',
    ]
  ) assert.ok(json.includes(key), `${key} in ${json}`);
  assert.ok(!json.includes("null"), json);
  assert.ok(!/"[a-z]+_[a-z]/.test(json), "no snake_case keys");
});

Deno.test("toSummary() leaves out what the device did not measure", () => {
  const s = toSummary(
    "n",
    msg({
      node: {},
      pods: [{
        podUid: "u",
        namespace: "ns",
        name: "p",
        containers: [{ name: "c" }],
      }],
    }),
  );
  assert.deepEqual(s.node, { nodeName: "n" });
  assert.deepEqual(s.pods, [{
    podRef: { name: "p", namespace: "ns", uid: "u" },
    containers: [{ name: "c" }],
  }]);
  assert.deepEqual(toSummary("n", msg({})), { node: { nodeName: "n" }, pods: [] });
});

Deno.test("toSummary() keeps counters past 2^32 and near 2^53 as numbers", () => {
  const big = 9_000_000_000_000_000n; // ~104 core-days
  const s = toSummary("n", msg({ node: { cpu: { timeUnixMs: T, usageCoreNanoseconds: big } } }));
  assert.equal(s.node.cpu?.usageCoreNanoSeconds, 9e15);
  assert.match(JSON.stringify(s), /"usageCoreNanoSeconds":9000000000000000/);
});

Deno.test("podUsage() sums and takes the newest time", () => {
  const u = podUsage(FULL.pods[0]!);
  assert.deepEqual(u.cpu, {
    timeMs: Number(T) + 5,
    usageCoreNanoseconds: 2_500_000_000,
    usageNanoCores: undefined,
  });
  assert.equal(u.memory?.workingSetBytes, 220);
});

Deno.test("rfc3339() writes metav1.Time's form: UTC, whole seconds; nothing for 0", () => {
  assert.equal(rfc3339(1624396278999), "2021-06-22T21:11:18Z");
  assert.equal(rfc3339(0n), undefined);
});
