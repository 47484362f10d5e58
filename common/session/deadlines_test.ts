import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

Deno.test("deadlines fire once after their time, cleared ones never, and the timer stops", async () => {
  const d = new Deadlines<number>(10);
  const fired: number[] = [];
  d.set(1, 20, () => fired.push(1));
  d.set(2, 20, () => fired.push(2));
  d.set(3, 500, () => fired.push(3));
  d.clear(2);
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(fired, [1]);
  assert.equal(d.size, 1);
  d.clear(3);
  assert.equal(d.size, 0); // no interval left behind: the test sanitizer would fail otherwise
});
