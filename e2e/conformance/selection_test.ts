/** selection.ts: scope, focus, skip list and the exact focus regex handed to ginkgo. */
import assert from "node:assert/strict";
import {
  escapeRegex,
  focusRegex,
  inScope,
  loadPatterns,
  overreach,
  parseSpecList,
  select,
} from "./selection.ts";
import { CACHE, ensureDir, ROOT } from "../paths.ts";

const LIST = `The following spec names can be used with 'ginkgo run --focus/skip':
    k8s.io/kubernetes@v1.34.4/test/e2e/common/node/pods.go:205: [sig-node] Pods should get a host IP [NodeConformance] [Conformance]
    k8s.io/kubernetes@v1.34.4/test/e2e/common/network/networking.go:85: [sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]
    k8s.io/kubernetes@v1.34.4/test/e2e/apps/daemon_set.go:170: [sig-apps] Daemon set [Serial] should run and stop simple daemon [Conformance]
    k8s.io/kubernetes@v1.34.4/test/e2e/network/service.go:780: [sig-network] Services should serve a basic endpoint from pods [Conformance]
    k8s.io/kubernetes@v1.34.4/test/e2e/apps/job.go:90: [sig-apps] Job should run a job to completion when tasks succeed
    k8s.io/kubernetes@v1.34.4/test/e2e/storage/subpath.go:60: [sig-storage] Subpath Atomic writer volumes should support subpaths with configmap pod [Conformance]

`;

Deno.test("parseSpecList and inScope: packages, [Conformance], no [Serial]", () => {
  const specs = parseSpecList(LIST);
  assert.equal(specs.length, 6);
  assert.equal(specs[0]!.file, "k8s.io/kubernetes@v1.34.4/test/e2e/common/node/pods.go");
  assert.deepEqual(specs.filter(inScope).map((s) => s.name), [
    "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]",
    "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]",
    "[sig-storage] Subpath Atomic writer volumes should support subpaths with configmap pod [Conformance]",
  ]);
});

Deno.test("select: focus narrows, the skip list skips with its reason", () => {
  const specs = parseSpecList(LIST);
  const all = select(specs, {
    skipList: [{ test: "Networking Granular Checks", reason: "no pod network" }],
  });
  assert.equal(all.selected.length, 3);
  assert.deepEqual(all.skipped, [{
    name:
      "[sig-network] Networking Granular Checks: Pods should function for intra-pod communication: http [NodeConformance] [Conformance]",
    reason: "no pod network",
  }]);
  assert.equal(all.run.length, 2);
  const narrow = select(specs, { focus: "host IP", skipList: [] });
  assert.deepEqual(narrow.run, [
    "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]",
  ]);
});

Deno.test("focusRegex matches exactly the names given (end-anchored, escaped)", () => {
  const names = ["a (b) [c]", "x.y"];
  const re = new RegExp(focusRegex(names));
  assert.ok(re.test("a (b) [c]"));
  assert.ok(re.test("x.y"));
  assert.ok(!re.test("xzy"));
  assert.ok(!re.test("a (b) [c] [Serial]"));
  assert.deepEqual(overreach(["a (b) [c]", "x.y", "long a (b) [c]"], names), ["long a (b) [c]"]);
  assert.equal(escapeRegex("[a]|b"), "\\[a\\]\\|b");
});

Deno.test("the repository's pattern files load", async () => {
  const skip = await loadPatterns(`${ROOT}/e2e/conformance/skip_list.yaml`, "skip");
  assert.ok(Array.isArray(skip));
  const reachable = await loadPatterns(
    `${ROOT}/e2e/conformance/reachable_only_here.yaml`,
    "reachable_only_here",
  );
  assert.ok(reachable.length >= 3);
  const bad = await Deno.makeTempFile({ dir: await ensureDir(`${CACHE}/tmp`), suffix: ".yaml" });
  try {
    await Deno.writeTextFile(bad, "skip:\n  - test: 'Pods'\n");
    await assert.rejects(() => loadPatterns(bad, "skip"), /needs "test" \(a regex\) and a reason/);
    await Deno.writeTextFile(bad, "skip:\n  - test: '(['\n    reason: x\n");
    await assert.rejects(() => loadPatterns(bad, "skip"), /bad regex/);
  } finally {
    await Deno.remove(bad);
  }
});
