import assert from "node:assert/strict";
import { StringPool } from "./string_pool.ts";

Deno.test("shareStrings: equal string values of parsed objects become one pooled copy, in place", () => {
  const pool = new StringPool();
  const a = JSON.parse(
    '{"metadata":{"namespace":"edge"},"status":{"conditions":[{"reason":"Ready"}]}}',
  );
  const b = JSON.parse(
    '{"metadata":{"namespace":"edge"},"status":{"conditions":[{"reason":"Ready"}]}}',
  );
  assert.equal(pool.shareStrings(a), a);
  pool.shareStrings(b);
  assert.deepEqual(a, b);
  assert.equal(pool.size, 2, "two distinct strings are held");
  // The same copy: the pool hands out the string it first saw for each value.
  assert.equal(pool.string("edge"), a.metadata.namespace);
  assert.equal(pool.string("edge"), b.metadata.namespace);
});

Deno.test("shareStrings: numbers, booleans, nulls, byte arrays and long strings are left as they are", () => {
  const pool = new StringPool({ maxLength: 8 });
  const bytes = new Uint8Array([1, 2, 3]);
  const long = "x".repeat(9);
  const o = { n: 1, t: true, z: null, bytes, long, list: ["short", 2, null] };
  pool.shareStrings(o);
  assert.deepEqual(o, { n: 1, t: true, z: null, bytes, long, list: ["short", 2, null] });
  assert.equal(pool.size, 1, "only the short string is pooled");
});

Deno.test("the pool is bounded: full, it starts empty again and values stay correct", () => {
  const pool = new StringPool({ maxEntries: 3 });
  for (const s of ["a", "b", "c", "d", "e"]) assert.equal(pool.string(s), s);
  assert.ok(pool.size <= 3, `size ${pool.size}`);
  const o = pool.shareStrings({ list: ["a", "b", "c", "d"] });
  assert.deepEqual(o, { list: ["a", "b", "c", "d"] });
});
