import assert from "node:assert/strict";
import { formatLabelSelector, matchesLabelSelector } from "./label_selector.ts";

Deno.test("label selector: matchLabels and every operator, as the API machinery evaluates them", () => {
  const labels = { team: "a", env: "test" };
  assert.equal(matchesLabelSelector({}, labels), true, "empty selects everything");
  assert.equal(matchesLabelSelector({}, undefined), true);
  assert.equal(matchesLabelSelector({ matchLabels: { team: "a" } }, labels), true);
  assert.equal(matchesLabelSelector({ matchLabels: { team: "b" } }, labels), false);
  assert.equal(matchesLabelSelector({ matchLabels: { team: "a", x: "1" } }, labels), false);
  const expr = (operator: string, values?: string[], key = "env") =>
    matchesLabelSelector({ matchExpressions: [{ key, operator, values }] }, labels);
  assert.equal(expr("In", ["prod", "test"]), true);
  assert.equal(expr("In", ["prod"]), false);
  assert.equal(expr("In", ["test"], "missing"), false);
  assert.equal(expr("NotIn", ["prod"]), true);
  assert.equal(expr("NotIn", ["test"]), false);
  assert.equal(expr("NotIn", ["x"], "missing"), true, "NotIn holds for an absent key");
  assert.equal(expr("Exists"), true);
  assert.equal(expr("Exists", undefined, "missing"), false);
  assert.equal(expr("DoesNotExist"), false);
  assert.equal(expr("DoesNotExist", undefined, "missing"), true);
  // Never wider than asked: malformed requirements match nothing.
  assert.equal(expr("In", []), false);
  assert.equal(expr("NotIn", []), false);
  assert.equal(expr("Gt", ["1"]), false);
  // matchLabels and matchExpressions together: both must hold.
  assert.equal(
    matchesLabelSelector({
      matchLabels: { team: "a" },
      matchExpressions: [{ key: "env", operator: "In", values: ["prod"] }],
    }, labels),
    false,
  );
});

Deno.test("label selector: written as kubectl -l reads it", () => {
  assert.equal(formatLabelSelector({}), "<everything>");
  assert.equal(
    formatLabelSelector({
      matchLabels: { a: "1" },
      matchExpressions: [
        { key: "b", operator: "In", values: ["x", "y"] },
        { key: "c", operator: "NotIn", values: ["z"] },
        { key: "d", operator: "Exists" },
        { key: "e", operator: "DoesNotExist" },
      ],
    }),
    "a=1,b in (x,y),c notin (z),d,!e",
  );
});
