import assert from "node:assert/strict";
import { parseSummary } from "./harness.ts";

Deno.test("parseSummary reads deno test's closing line", () => {
  assert.deepEqual(parseSummary("ok | 12 passed (40 steps) | 0 failed | 2 ignored (3s)"), {
    passed: 12,
    failed: 0,
    ignored: 2,
  });
  assert.deepEqual(parseSummary("FAILED | 3 passed | 1 failed (1 step) (9s)"), {
    passed: 3,
    failed: 1,
    ignored: 0,
  });
  assert.equal(parseSummary("no summary here"), undefined);
});
