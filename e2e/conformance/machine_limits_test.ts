import assert from "node:assert/strict";
import { applicableLimits } from "./machine_limits.ts";

const YAML = `limits:
  - test: 'Job privileged'
    runtime: docker
    requires: allCapabilities
    reason: needs every capability
`;

Deno.test("machine limits apply only on their runtime and only where the fact is false", () => {
  assert.deepEqual(applicableLimits(YAML, "docker", { allCapabilities: false }), [
    { test: "Job privileged", reason: "this machine: needs every capability" },
  ]);
  assert.deepEqual(applicableLimits(YAML, "docker", { allCapabilities: true }), []);
  assert.deepEqual(applicableLimits(YAML, "podman", { allCapabilities: false }), []);
  assert.throws(
    () =>
      applicableLimits(
        "limits:\n  - test: x\n    runtime: docker\n    requires: magic\n    reason: r\n",
        "docker",
        { allCapabilities: false },
      ),
    /requires "magic", unknown/,
  );
  assert.throws(
    () => applicableLimits("limits:\n  - test: x\n", "docker", { allCapabilities: false }),
    /needs test, runtime, requires and reason/,
  );
});
