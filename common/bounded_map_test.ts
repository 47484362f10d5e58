import assert from "node:assert/strict";
import { setBounded } from "./bounded_map.ts";

Deno.test("setBounded keeps the newest entries up to the bound", () => {
  const m = new Map<string, number>();
  for (let i = 0; i < 10; i++) setBounded(m, `k${i}`, i, 3);
  assert.deepEqual([...m.keys()], ["k7", "k8", "k9"]);
  setBounded(m, "k7", 70, 3); // a refreshed key becomes the newest
  setBounded(m, "k10", 10, 3);
  assert.deepEqual([...m.entries()], [["k9", 9], ["k7", 70], ["k10", 10]]);
});
