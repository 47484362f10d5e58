/** The unit run's selection and guard (pure logic, no service). */
import assert from "node:assert/strict";
import { isUnitTest, refuseInUnitRun, UNIT_RUN_ENV, unitTestFiles } from "./unit_run.ts";

Deno.test("a test file is a unit test unless its name or imports say it needs services", () => {
  assert.equal(isUnitTest("x_test.ts", `import { a } from "./a.ts";`), true);
  assert.equal(isUnitTest("x_e2e_test.ts", ""), false);
  assert.equal(isUnitTest("bench/x_smoke_test.ts", ""), false);
  assert.equal(isUnitTest("e2e/services/sshd_test.ts", ""), false);
  for (
    const spec of [
      "../../e2e/fixtures.ts",
      "./edge_fixtures.ts",
      "../e2e/arhat_harness.ts",
      "./services/podman.ts",
      "../e2e/cluster/control_plane.ts",
      "../kube/testing/test_clients.ts",
      "../../e2e/link/mqtt_fixture.ts",
      "../../e2e/services/sshd.ts",
      "@aranya/e2e/fixtures",
      "@aranya/e2e/services/podman",
      "@aranya/aranya/kube/testing/test_clients",
    ]
  ) {
    assert.equal(isUnitTest("x_test.ts", `import { b } from "${spec}";`), false, spec);
  }
});

Deno.test("the unit run has this file and none of the end-to-end tests", async () => {
  const files = await unitTestFiles();
  assert.ok(files.includes("e2e/unit_run_test.ts"));
  assert.ok(files.includes("common/backoff_test.ts"));
  assert.ok(!files.some((f) => /_e2e_test\.ts$|_smoke_test\.ts$/.test(f)));
  assert.ok(!files.includes("aranya/kube/informer_test.ts"), "needs the API server");
});

Deno.test("a service starter refuses during the unit run, naming the service", () => {
  const before = Deno.env.get(UNIT_RUN_ENV);
  try {
    Deno.env.set(UNIT_RUN_ENV, "1");
    assert.throws(() => refuseInUnitRun("the control plane"), /needs the control plane/);
    Deno.env.delete(UNIT_RUN_ENV);
    refuseInUnitRun("the control plane");
  } finally {
    if (before === undefined) Deno.env.delete(UNIT_RUN_ENV);
    else Deno.env.set(UNIT_RUN_ENV, before);
  }
});
