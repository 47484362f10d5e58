import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  acceptMac,
  brokerPassword,
  FrameOpener,
  FrameSealer,
  linkKey,
  macEqual,
  newNonce,
  offlineMac,
  onlineMac,
  SEAL_OVERHEAD,
  sessionKeys,
} from "./mqtt_seal.ts";

const te = new TextEncoder();

Deno.test("sealed frames open once, in order, only with the right key and connection", () => {
  const k = linkKey("token-1");
  const nd = newNonce();
  const na = newNonce();
  const keys = sessionKeys(k, "conn-1", nd, na);
  const sealer = new FrameSealer(keys.cmd, "conn-1");
  const a = sealer.seal(te.encode("first"));
  const b = sealer.seal(te.encode("second"));
  assert.equal(a.byteLength, 5 + SEAL_OVERHEAD);
  assert.ok(!new TextDecoder().decode(a).includes("first"), "encrypted");

  const opener = new FrameOpener(keys.cmd, "conn-1");
  assert.equal(new TextDecoder().decode(opener.open(a)), "first");
  assert.equal(opener.open(a), undefined, "a replay (or QoS 1 redelivery) is dropped");
  assert.equal(new TextDecoder().decode(opener.open(b)), "second");
  assert.equal(opener.open(a), undefined, "an older frame is dropped");

  // The other direction, another connection, another token, tampering: nothing opens.
  const c = sealer.seal(te.encode("third"));
  assert.equal(new FrameOpener(keys.msg, "conn-1").open(c), undefined);
  assert.equal(new FrameOpener(keys.cmd, "conn-2").open(c), undefined);
  const other = sessionKeys(linkKey("token-2"), "conn-1", nd, na);
  assert.equal(new FrameOpener(other.cmd, "conn-1").open(c), undefined);
  const tampered = c.slice();
  tampered[10]! ^= 1;
  assert.equal(new FrameOpener(keys.cmd, "conn-1").open(tampered), undefined);
  assert.equal(new FrameOpener(keys.cmd, "conn-1").open(new Uint8Array(10)), undefined);
  assert.equal(new TextDecoder().decode(new FrameOpener(keys.cmd, "conn-1").open(c)), "third");
});

Deno.test("proofs bind every field; the broker password reveals neither token nor key", () => {
  const k = linkKey("token-1");
  const nd = newNonce();
  const na = newNonce();
  const m = onlineMac(k, "ns/d", "c1", nd);
  assert.ok(macEqual(m, onlineMac(linkKey("token-1"), "ns/d", "c1", nd)));
  for (
    const other of [
      onlineMac(linkKey("token-2"), "ns/d", "c1", nd),
      onlineMac(k, "ns/e", "c1", nd),
      onlineMac(k, "ns/d", "c2", nd),
      onlineMac(k, "ns/d", "c1", newNonce()),
      acceptMac(k, "ns/d", "c1", nd, na),
      offlineMac(k, "ns/d", "c1"),
    ]
  ) assert.ok(!macEqual(m, other));
  assert.ok(!macEqual(m, m.subarray(0, 16)));
  const pw = brokerPassword(k);
  assert.match(pw, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(!pw.includes("token-1"));
  assert.notEqual(pw, Buffer.from(k).toString("base64url"));
});
