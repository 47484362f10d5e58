import assert from "node:assert/strict";
import { decodeBase64, decodeBase64Text } from "./base64.ts";

Deno.test("decodeBase64: bytes and text back; padding optional, whitespace ignored", () => {
  assert.deepEqual(decodeBase64("AAH/"), new Uint8Array([0, 1, 255]));
  assert.equal(decodeBase64Text("aGk="), "hi");
  assert.equal(decodeBase64Text("aGk"), "hi");
  assert.equal(decodeBase64Text("aG\nk=\n"), "hi");
  assert.equal(decodeBase64Text("w6k="), "é");
});

Deno.test("decodeBase64: what is not base64 is refused, naming the value", () => {
  assert.throws(
    () => decodeBase64("not base64!", 'Secret "a/b" key "token"'),
    /Secret "a\/b" key "token" is not base64/,
  );
});
