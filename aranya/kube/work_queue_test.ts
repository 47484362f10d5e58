import assert from "node:assert/strict";
import { WorkQueue } from "./work_queue.ts";

Deno.test("work queue de-duplicates, never runs a key twice at once, reprocesses a key added meanwhile", async () => {
  const q = new WorkQueue({ workers: 3 });
  const running = new Set<string>();
  const runs: string[] = [];
  let overlap = false;
  const ac = new AbortController();
  let gate!: () => void;
  const held = new Promise<void>((r) => gate = r);
  const p = q.run(ac.signal, async (key) => {
    if (running.has(key)) overlap = true;
    running.add(key);
    runs.push(key);
    if (key === "a" && runs.filter((k) => k === "a").length === 1) await held;
    running.delete(key);
  });
  q.add("a");
  q.add("a");
  q.add("b");
  await new Promise((r) => setTimeout(r, 20));
  q.add("a"); // while "a" is being processed: once more afterwards
  q.add("a");
  gate();
  await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  await p;
  assert.equal(overlap, false);
  assert.deepEqual(runs.filter((k) => k === "a").length, 2);
  assert.deepEqual(runs.filter((k) => k === "b").length, 1);
});

Deno.test("work queue retries failures with back-off", async () => {
  const q = new WorkQueue({ backoff: { initialMs: 10, maxMs: 20, jitter: 0 } });
  let attempts = 0;
  const ac = new AbortController();
  const done = new Promise<void>((resolve) => {
    q.run(ac.signal, () => {
      attempts++;
      if (attempts < 3) return Promise.reject(new Error("not yet"));
      resolve();
      return Promise.resolve();
    });
  });
  q.add("x");
  await done;
  ac.abort();
  assert.equal(attempts, 3);
});

Deno.test("work queue wakes every idle worker: keys added at once run in parallel", async () => {
  const results: string[] = [];
  const q = new WorkQueue({ workers: 4, onResult: (r) => results.push(r) });
  const ac = new AbortController();
  let now = 0;
  let peak = 0;
  const p = q.run(ac.signal, async (key) => {
    peak = Math.max(peak, ++now);
    await new Promise((r) => setTimeout(r, 30));
    now--;
    if (key === "k7") throw new Error("fails once");
  });
  await new Promise((r) => setTimeout(r, 10)); // all workers idle
  for (let i = 0; i < 8; i++) q.add(`k${i}`);
  await new Promise((r) => setTimeout(r, 200));
  ac.abort();
  await p;
  assert.equal(peak, 4, "four workers busy at once");
  assert.ok(results.filter((r) => r === "success").length >= 7);
  assert.ok(results.includes("error"));
});
