import assert from "node:assert/strict";
import { DueSet } from "./due_set.ts";

Deno.test("due set: the earliest time per key; take returns and removes what is due", () => {
  const s = new DueSet();
  s.schedule("a", 100);
  s.schedule("a", 50);
  s.schedule("a", 80);
  assert.equal(s.at("a"), 50, "the earliest wins");
  s.schedule("b", 200);
  s.schedule("c", 10);
  s.delete("c");
  assert.deepEqual(s.take(49), []);
  assert.deepEqual(s.take(50), ["a"]);
  assert.deepEqual(s.take(150), [], "taken once");
  assert.equal(s.size, 1);
  s.schedule("a", 300);
  assert.deepEqual(s.take(1000).sort(), ["a", "b"]);
  assert.equal(s.size, 0);
});
