import assert from "node:assert/strict";
import { ProtocolError } from "@aranya/common/errors";
import { decodeChunked, parseResponseHead } from "./hijack.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("hijack: parses the upgrade answer and keeps the bytes after the head", () => {
  const wire = enc.encode(
    "HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n" +
      "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00",
  );
  for (let i = 0; i < wire.length - 4; i++) {
    assert.equal(parseResponseHead(wire.subarray(0, i)), undefined, `incomplete at ${i}`);
  }
  const head = parseResponseHead(wire)!;
  assert.equal(head.status, 101);
  assert.equal(head.reason, "UPGRADED");
  assert.equal(head.headers.get("upgrade"), "tcp");
  assert.equal(head.headers.get("content-type"), "application/vnd.docker.raw-stream");
  assert.deepEqual([...wire.subarray(head.length)], [1, 0, 0, 0]);
  assert.equal(parseResponseHead(enc.encode("HTTP/1.1 200\r\n\r\n"))?.status, 200);
});

Deno.test("hijack: malformed heads are protocol errors", () => {
  assert.throws(() => parseResponseHead(enc.encode("SSH-2.0-OpenSSH\r\n\r\n")), ProtocolError);
  assert.throws(
    () => parseResponseHead(enc.encode("HTTP/1.1 404 Not Found\r\nno colon here\r\n\r\n")),
    ProtocolError,
  );
});

Deno.test("hijack: decodes a chunked error body only once complete", () => {
  const wire = enc.encode('7\r\n{"messa\r\n13\r\nge":"No such exec"}\r\n0\r\n\r\n');
  for (let i = 0; i < wire.length - 5; i++) {
    assert.equal(decodeChunked(wire.subarray(0, i)), undefined, `incomplete at ${i}`);
  }
  assert.equal(dec.decode(decodeChunked(wire)), '{"message":"No such exec"}');
  assert.throws(() => decodeChunked(enc.encode("zz\r\n")), ProtocolError);
});
