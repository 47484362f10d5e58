import assert from "node:assert/strict";
import { InvalidInputError } from "@aranya/common/errors";
import { crc32, decodeRecord, encodeRecord } from "./record.ts";

Deno.test("crc32() matches the IEEE check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array()), 0);
});

Deno.test("decodeRecord() returns what encodeRecord() stored", () => {
  for (
    const record of [
      { key: "6f1c8d0e-0000-4000-8000-000000000001", payload: new Uint8Array([1, 2, 3]) },
      { key: "ü/../x", payload: new Uint8Array() },
      { key: "k", payload: crypto.getRandomValues(new Uint8Array(4096)) },
    ]
  ) {
    assert.deepEqual(decodeRecord(encodeRecord(record)), record);
  }
});

Deno.test("decodeRecord() refuses damaged records with a reason", () => {
  const good = encodeRecord({ key: "uid-1", payload: new TextEncoder().encode("hello") });
  const flip = (i: number) => {
    const b = good.slice();
    b[i]! ^= 0x01;
    return b;
  };
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty file", new Uint8Array(), /truncated: 0 bytes/],
    ["torn write", good.subarray(0, good.length - 2), /checksum mismatch/],
    ["flipped payload bit", flip(good.length - 1), /checksum mismatch/],
    ["flipped key-length bit", flip(9), /checksum mismatch/],
    ["flipped checksum bit", flip(5), /checksum mismatch/],
    ["no magic", flip(0), /no "ARJ1" magic/],
    ["trailing bytes", new Uint8Array([...good, 0]), /checksum mismatch/],
  ];
  for (const [name, bytes, message] of cases) {
    assert.throws(() => decodeRecord(bytes), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, name);
      assert.match(err.message, message, name);
      return true;
    });
  }
});

Deno.test("encodeRecord() refuses empty and oversized keys", () => {
  assert.throws(() => encodeRecord({ key: "", payload: new Uint8Array() }), /must be 1 to 1024/);
  assert.throws(
    () => encodeRecord({ key: "x".repeat(1025), payload: new Uint8Array() }),
    InvalidInputError,
  );
});
