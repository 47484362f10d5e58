import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { StatsMsgSchema } from "@aranya/proto/gen/aranya/stats_pb";
import { formatGoFloat, toResourceMetrics } from "./resource_metrics.ts";

/** The kubelet's own test time, in ms: 2021-06-22T21:11:18.302Z. */
const T = 1624396278302n;

function msg(init: MessageInitShape<typeof StatsMsgSchema>) {
  return create(StatsMsgSchema, init);
}

const SCRAPE_OK =
  `# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
`;

Deno.test("toResourceMetrics() writes node, container and pod families as the kubelet does", () => {
  const container = (name: string, startMs: bigint, cpuNs: bigint, ws: bigint) => ({
    name,
    startTimeUnixMs: startMs,
    cpu: { timeUnixMs: T, usageCoreNanoseconds: cpuNs },
    memory: { timeUnixMs: T, usageBytes: ws * 2n, workingSetBytes: ws },
  });
  const text = toResourceMetrics(msg({
    node: {
      cpu: { timeUnixMs: T, usageCoreNanoseconds: 10_000_000_000n },
      memory: { timeUnixMs: T, usageBytes: 2000n, workingSetBytes: 1000n, availableBytes: 5n },
    },
    // Out of order on purpose: the output is sorted by label values.
    pods: [{
      podUid: "b",
      namespace: "namespace_b",
      name: "pod_b",
      containers: [container("container_a", T - 600_000n, 10_000_000_000n, 1000n)],
    }, {
      podUid: "a",
      namespace: "namespace_a",
      name: "pod_a",
      containers: [
        container("container_b", T - 120_000n, 1_500_000_000n, 16_625_664n),
        container("container_a", T - 30_000n, 10_000_000_000n, 1000n),
      ],
    }],
  }));
  assert.equal(
    text,
    `# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="container_a",namespace="namespace_a",pod="pod_a"} 10 1624396278302
container_cpu_usage_seconds_total{container="container_a",namespace="namespace_b",pod="pod_b"} 10 1624396278302
container_cpu_usage_seconds_total{container="container_b",namespace="namespace_a",pod="pod_a"} 1.5 1624396278302
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="container_a",namespace="namespace_a",pod="pod_a"} 1000 1624396278302
container_memory_working_set_bytes{container="container_a",namespace="namespace_b",pod="pod_b"} 1000 1624396278302
container_memory_working_set_bytes{container="container_b",namespace="namespace_a",pod="pod_a"} 1.6625664e+07 1624396278302
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="container_a",namespace="namespace_a",pod="pod_a"} 1.624396248302e+09
container_start_time_seconds{container="container_a",namespace="namespace_b",pod="pod_b"} 1.624395678302e+09
container_start_time_seconds{container="container_b",namespace="namespace_a",pod="pod_a"} 1.624396158302e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 10 1624396278302
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1000 1624396278302
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="namespace_a",pod="pod_a"} 11.5 1624396278302
pod_cpu_usage_seconds_total{namespace="namespace_b",pod="pod_b"} 10 1624396278302
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="namespace_a",pod="pod_a"} 1.6626664e+07 1624396278302
pod_memory_working_set_bytes{namespace="namespace_b",pod="pod_b"} 1000 1624396278302
${SCRAPE_OK}`,
  );
});

Deno.test("toResourceMetrics() with nothing measured is the scrape result alone", () => {
  assert.equal(toResourceMetrics(msg({})), SCRAPE_OK);
  assert.equal(
    toResourceMetrics(msg({
      node: {},
      pods: [{ namespace: "ns", name: "p", containers: [{ name: "c" }] }],
    })),
    SCRAPE_OK,
  );
});

Deno.test("toResourceMetrics() skips unknown start times and escapes label values", () => {
  const text = toResourceMetrics(msg({
    pods: [{
      namespace: "ns",
      name: 'we"ird\\pod',
      containers: [{
        name: "c",
        startTimeUnixMs: 0n,
        memory: { timeUnixMs: T, workingSetBytes: 1n },
      }],
    }],
  }));
  assert.ok(!text.includes("container_start_time_seconds"), text);
  assert.ok(!text.includes("cpu_usage"), text);
  assert.ok(
    text.includes(
      `container_memory_working_set_bytes{container="c",namespace="ns",pod="we\\"ird\\\\pod"} 1 ${T}\n`,
    ),
    text,
  );
});

Deno.test("formatGoFloat() matches Go's strconv.FormatFloat(v, 'g', -1, 64)", () => {
  const cases: [number, string][] = [
    [0, "0"],
    [1, "1"],
    [-1, "-1"],
    [10, "10"],
    [123456, "123456"],
    [1e6, "1e+06"],
    [1234567, "1.234567e+06"],
    [16625664, "1.6625664e+07"],
    [0.0001, "0.0001"],
    [0.00001, "1e-05"],
    [1.5, "1.5"],
    [1624396248.3020916, "1.6243962483020916e+09"],
    [1e21, "1e+21"],
    [1.8e19, "1.8e+19"],
    [1e-300, "1e-300"],
    [NaN, "NaN"],
    [Infinity, "+Inf"],
    [-Infinity, "-Inf"],
  ];
  for (const [v, want] of cases) assert.equal(formatGoFloat(v), want, String(v));
});
