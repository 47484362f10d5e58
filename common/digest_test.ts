import assert from "node:assert/strict";
import { fileSha256Hex, sha256Hex } from "./digest.ts";

const ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

Deno.test("sha256Hex: the FIPS 180-2 vector, for a string and for bytes", () => {
  assert.equal(sha256Hex("abc"), ABC);
  assert.equal(sha256Hex(new TextEncoder().encode("abc")), ABC);
});

Deno.test("fileSha256Hex: a file of several chunks hashes like its bytes", async () => {
  const data = new Uint8Array(300_000).map((_, i) => i % 251);
  // The test permission set writes under /tmp/aranya-e2e.
  await Deno.mkdir("/tmp/aranya-e2e", { recursive: true });
  const path = await Deno.makeTempFile({ dir: "/tmp/aranya-e2e", prefix: "digest-" });
  try {
    await Deno.writeFile(path, data);
    assert.equal(await fileSha256Hex(path), sha256Hex(data));
  } finally {
    await Deno.remove(path);
  }
});
