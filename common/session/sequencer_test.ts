import assert from "node:assert/strict";
import { ProtocolError } from "../errors.ts";
import { chunk, MessageAssembler } from "./assembler.ts";
import { Sequencer } from "./sequencer.ts";

const f = (seq: number) => ({ seq: BigInt(seq) });

Deno.test("sequencer restores order and drops duplicates", () => {
  const s = new Sequencer<{ seq: bigint }>();
  assert.deepEqual(s.push(f(1)), []);
  assert.deepEqual(s.push(f(2)), []);
  assert.deepEqual(s.push(f(0)).map((x) => x.seq), [0n, 1n, 2n]);
  assert.deepEqual(s.push(f(1)), []);
  assert.deepEqual(s.push(f(3)).map((x) => x.seq), [3n]);
});

Deno.test("sequencer fails the session when a gap never fills", () => {
  const s = new Sequencer<{ seq: bigint }>(4);
  for (let i = 1; i <= 4; i++) s.push(f(i));
  assert.throws(() => s.push(f(5)), ProtocolError);
});

Deno.test("assembler joins chunks and enforces its limit", () => {
  const a = new MessageAssembler(10);
  assert.equal(a.push(7, new Uint8Array([1, 2]), false), undefined);
  assert.deepEqual(a.push(7, new Uint8Array([3]), true), new Uint8Array([1, 2, 3]));
  assert.throws(() => {
    a.push(7, new Uint8Array(8), false);
    a.push(7, new Uint8Array(8), false);
  }, ProtocolError);
  const b = new MessageAssembler(100);
  b.push(1, new Uint8Array(1), false);
  assert.throws(() => b.push(2, new Uint8Array(1), true), /interrupted/);
});

Deno.test("chunk splits payloads", () => {
  assert.equal(chunk(new Uint8Array(0), 4).length, 1);
  assert.deepEqual(chunk(new Uint8Array(10), 4).map((c) => c.length), [4, 4, 2]);
});
