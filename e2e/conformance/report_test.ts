/** report.ts on a small JUnit sample in the upstream framework's format (testdata/junit_sample.xml). */
import assert from "node:assert/strict";
import { decodeXml, figures, oneLineCause, parseJunit, ranSpecs, summaryLines } from "./report.ts";

const SAMPLE = new URL("./testdata/junit_sample.xml", import.meta.url);

const HOST_IP = "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]";
const RS =
  "[sig-apps] ReplicaSet should serve a basic image on each replica with a public image [Conformance]";
const NET =
  "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]";
const PROBE =
  '[sig-node] Probing container should be restarted with a exec "cat /tmp/health" liveness probe [NodeConformance] [Conformance]';
const EMPTYDIR =
  "[sig-storage] EmptyDir volumes should support (root,0644,tmpfs) [LinuxOnly] [NodeConformance] [Conformance]";
const NEVER = "[sig-node] Pods should be updated [NodeConformance] [Conformance]";

Deno.test("parseJunit reads the suite counters and every testcase", async () => {
  const suite = parseJunit(await Deno.readTextFile(SAMPLE));
  assert.equal(suite.tests, 7);
  assert.equal(suite.failures, 2);
  assert.equal(suite.skipped, 2);
  assert.equal(suite.seconds, 120.5);
  assert.equal(suite.cases.length, 7);
  const setup = suite.cases[0]!;
  assert.equal(setup.node, "SynchronizedBeforeSuite");
  assert.equal(setup.name, "");
  const probe = suite.cases.find((c) => c.name === PROBE)!;
  assert.equal(probe.node, "It");
  assert.equal(probe.status, "timedout");
  const net = suite.cases.find((c) => c.name === NET)!;
  assert.match(net.detail!, /^\[FAILED\] failed to reach pod "netserver-0" at 10\.88\.0\.5:8083/);
  assert.equal(suite.cases.find((c) => c.name === HOST_IP)!.seconds, 2.041233355);
  assert.deepEqual(ranSpecs(suite), [HOST_IP, RS, NET, PROBE, EMPTYDIR]);
});

Deno.test("figures sorts the run's specs; filtered-out specs do not count", async () => {
  const suite = parseJunit(await Deno.readTextFile(SAMPLE));
  const f = figures(suite, [HOST_IP, RS, NET, PROBE, EMPTYDIR, NEVER]);
  assert.deepEqual(f.passed.map((p) => p.name), [HOST_IP, RS]);
  assert.deepEqual(f.failed.map((p) => p.name), [NET, PROBE]);
  assert.equal(
    f.failed[0]!.cause,
    '[FAILED] failed to reach pod "netserver-0" at 10.88.0.5:8083 <dial tcp: i/o timeout>',
  );
  assert.equal(f.failed[1]!.cause, "[TIMEDOUT] A suite timeout occurred");
  assert.deepEqual(f.skippedAtRuntime, [
    {
      name: EMPTYDIR,
      seconds: 0.1,
      cause: "Only supported for providers [gce gke] (not skeleton)",
    },
  ]);
  assert.deepEqual(f.notRun, [NEVER]);
  assert.deepEqual(f.suiteFailures, []);
  const lines = summaryLines(f, "junit_01.xml");
  assert.equal(
    lines[0],
    "JUnit junit_01.xml: 2 passed, 2 failed, 1 skipped at run time, 1 not run",
  );
  assert.ok(lines.some((l) => l.includes(`FAILED ${NET}`)));
});

Deno.test("a failed suite node is reported apart", () => {
  const xml =
    `<testsuite tests="1" failures="1"><testcase name="[SynchronizedBeforeSuite]" status="failed" time="180"><failure type="failed">
[FAILED] there are currently no ready, schedulable nodes in the cluster
In [SynchronizedBeforeSuite] at: framework/util.go:1</failure></testcase></testsuite>`;
  const f = figures(parseJunit(xml), [HOST_IP]);
  assert.deepEqual(f.notRun, [HOST_IP]);
  assert.equal(f.suiteFailures.length, 1);
  assert.equal(f.suiteFailures[0]!.name, "[SynchronizedBeforeSuite]");
  assert.equal(
    f.suiteFailures[0]!.cause,
    "[FAILED] there are currently no ready, schedulable nodes in the cluster",
  );
});

Deno.test("decodeXml and oneLineCause", () => {
  assert.equal(
    decodeXml("a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39; &#xA;"),
    "a <b> & \"c\" 'd' \n",
  );
  assert.equal(oneLineCause(undefined), "");
  assert.equal(oneLineCause("\n  first line\nsecond"), "first line");
  assert.equal(oneLineCause("x".repeat(300), 10), `${"x".repeat(9)}…`);
  assert.equal(
    oneLineCause(
      '\n[FAILED] expected "data-1=value-1" in container output: Expected\n    <string>: PATH=/bin\nto contain substring\n    <string>: data-1=value-1\nIn [It] at: output.go:263 @ 12/06/26\n',
    ),
    '[FAILED] expected "data-1=value-1" in container output: Expected <string>: PATH=/bin to contain substring <string>: data-1=value-1',
  );
});
