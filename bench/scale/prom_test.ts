import assert from "node:assert/strict";
import { parsePrometheus, sumBy, sumOf } from "./prom.ts";

const TEXT = `# HELP aranya_api_writes_total Kubernetes API requests that write.
# TYPE aranya_api_writes_total counter
aranya_api_writes_total 1234
process_resident_memory_bytes 7.5e+07
aranya_api_requests_total{verb="get"} 10
aranya_api_requests_total{verb="update"} 5
apiserver_longrunning_requests{group="",resource="nodes",verb="WATCH",note="a \\"quoted\\", value"} 3
apiserver_longrunning_requests{group="",resource="pods",verb="WATCH"} 2 1700000000000
apiserver_longrunning_requests{group="",resource="pods",verb="CONNECT"} 9
not a sample line
`;

Deno.test("parsePrometheus reads names, labels (with escapes) and values", () => {
  const s = parsePrometheus(TEXT);
  assert.equal(s.length, 7);
  assert.equal(s[1]!.value, 75_000_000);
  assert.equal(s[4]!.labels.note, 'a "quoted", value');
  assert.equal(s[5]!.value, 2, "a timestamp after the value is ignored");
});

Deno.test("sumOf and sumBy: sums, filters, and missing metrics are undefined", () => {
  const s = parsePrometheus(TEXT);
  assert.equal(sumOf(s, "aranya_api_writes_total"), 1234);
  assert.equal(sumOf(s, "aranya_api_requests_total"), 15);
  assert.equal(sumOf(s, "apiserver_longrunning_requests", (l) => l.verb === "WATCH"), 5);
  assert.equal(sumOf(s, "aranya_watches"), undefined);
  assert.deepEqual(
    sumBy(s, "apiserver_longrunning_requests", "resource", (l) => l.verb === "WATCH"),
    { nodes: 3, pods: 2 },
  );
});
