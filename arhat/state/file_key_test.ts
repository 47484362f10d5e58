import assert from "node:assert/strict";
import { InvalidInputError } from "@aranya/common/errors";
import { encodeFileKey } from "./file_key.ts";

Deno.test("encodeFileKey() keeps uids and escapes everything else", () => {
  const cases: [string, string][] = [
    ["3d1219c7-c4c5-404a-aa1f-6d2a48adfda4", "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4"],
    ["a_b-C", "a_b-C"],
    ["..", "%2E%2E"],
    ["a/b", "a%2Fb"],
    [".hidden", "%2Ehidden"],
    ["ü", "%C3%BC"],
    ["a%2F", "a%252F"],
  ];
  for (const [key, want] of cases) assert.equal(encodeFileKey(key), want, key);
  assert.notEqual(encodeFileKey("a/b"), encodeFileKey("a%2Fb"));
});

Deno.test("encodeFileKey() refuses empty and overlong keys", () => {
  assert.throws(() => encodeFileKey(""), InvalidInputError);
  assert.throws(() => encodeFileKey("/".repeat(67)), /too long for a file name: 201/);
  assert.equal(encodeFileKey("a".repeat(200)).length, 200);
});
