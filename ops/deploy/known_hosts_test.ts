/** known_hosts parsing and host key checks; the fixtures were made with OpenSSH's ssh-keygen. */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Buffer } from "node:buffer";
import {
  blobKeyType,
  checkHostKey,
  entryMatchesHost,
  hashKnownHostsName,
  type KnownHostEntry,
  knownHostsName,
  knownKeyTypes,
  parseKnownHosts,
  parsePublicKeyLine,
  type PublicKey,
  sha256Fingerprint,
} from "./known_hosts.ts";

// Throwaway keys generated for these tests, with `ssh-keygen -l` fingerprints.
const KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeNWM2o7iTq9h0Byb/XuZXtXlwVFQHORzB7ldMTk9Cm";
const FP_A = "SHA256:TeIlWfewE3aPrBUh69qtW8YWZFU55grMtD4kQDIHYVE";
const KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcx7QcZcbskzoUNInPLAh+jfQGavstvkXu67Fq82vyU";
const FP_B = "SHA256:1N5NuZdmTekQwIcZuxWB2Zs47ykO5gIqaVWEwcSdQZc";
const KEY_C =
  "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFPSKgTUYjK7" +
  "DqymaTK2Gs1A+4YrcaSL7l8MEfwS9lekRcISQ1sw6N2g2rHnILWyzEcg7FRvrEG8ojCUYkZeMD0=";
const FP_C = "SHA256:VzDaP+WOv8jdNNFaD0Yjn7azmmExLOprHrxSSLeDY0Q";
/** `ssh-keygen -H` of "[pi.example]:2222 KEY_A". */
const OPENSSH_HASHED = "|1|2CfV9aE1rVhCY/V5m1Hq/pOeg6Q=|VYi8pT0T5XvuIrHNoQ8TU2dDIec=";

function key(line: string): PublicKey {
  const k = parsePublicKeyLine(line);
  assert.ok(k, `"${line}" parses`);
  return k;
}

function one(line: string): KnownHostEntry {
  const entries = parseKnownHosts(line);
  assert.equal(entries.length, 1, `"${line}" is one entry`);
  return entries[0]!;
}

Deno.test("fingerprints match ssh-keygen -l", () => {
  assert.equal(sha256Fingerprint(key(KEY_A).blob), FP_A);
  assert.equal(sha256Fingerprint(key(KEY_B).blob), FP_B);
  assert.equal(sha256Fingerprint(key(KEY_C).blob), FP_C);
});

Deno.test("public key lines parse with or without a comment, and bad ones do not", () => {
  assert.equal(key(`${KEY_A} root@pi`).type, "ssh-ed25519");
  assert.equal(key(KEY_C).type, "ecdsa-sha2-nistp256");
  assert.equal(blobKeyType(key(KEY_C).blob), "ecdsa-sha2-nistp256");
  assert.equal(parsePublicKeyLine("ssh-ed25519"), undefined);
  assert.equal(parsePublicKeyLine("ssh-ed25519 not*base64"), undefined);
  // The type outside disagrees with the one inside the blob.
  assert.equal(parsePublicKeyLine(`ssh-rsa ${KEY_A.split(" ")[1]}`), undefined);
  assert.equal(blobKeyType(new Uint8Array([0, 0, 0, 200, 1])), undefined);
});

Deno.test("parsing skips comments, blank, unknown-marker and malformed lines", () => {
  const entries = parseKnownHosts(
    [
      "# a comment",
      "",
      `pi.example ${KEY_A} comment words`,
      "broken line",
      `@future pi.example ${KEY_B}`,
      `@revoked * ${KEY_B}`,
      `@cert-authority *.example ${KEY_C}`,
      `  [pi.example]:2222,10.0.0.5 ${KEY_C}\r`,
    ].join("\n"),
  );
  assert.deepEqual(
    entries.map((e) => [e.line, e.marker, e.hosts, e.key.type]),
    [
      [3, undefined, "pi.example", "ssh-ed25519"],
      [6, "revoked", "*", "ssh-ed25519"],
      [7, "cert-authority", "*.example", "ecdsa-sha2-nistp256"],
      [8, undefined, "[pi.example]:2222,10.0.0.5", "ecdsa-sha2-nistp256"],
    ],
  );
});

Deno.test("names use brackets for ports other than 22 and are lower-cased", () => {
  assert.equal(knownHostsName("Pi.Example", 22), "pi.example");
  assert.equal(knownHostsName("127.0.0.1", 2222), "[127.0.0.1]:2222");
});

Deno.test("plain patterns: lists, ports, wildcards, negation, case", () => {
  const list = one(`pi.example,10.0.0.5 ${KEY_A}`);
  assert.ok(entryMatchesHost(list, "10.0.0.5", 22));
  assert.ok(entryMatchesHost(list, "PI.example", 22));
  assert.equal(entryMatchesHost(list, "10.0.0.5", 2222), false);
  assert.equal(entryMatchesHost(list, "10.0.0.50", 22), false);

  const ported = one(`[10.0.0.5]:2222 ${KEY_A}`);
  assert.ok(entryMatchesHost(ported, "10.0.0.5", 2222));
  assert.equal(entryMatchesHost(ported, "10.0.0.5", 22), false);

  const wild = one(`*.example,10.0.0.?,!bad.example ${KEY_A}`);
  assert.ok(entryMatchesHost(wild, "a.b.example", 22));
  assert.ok(entryMatchesHost(wild, "10.0.0.7", 22));
  assert.equal(entryMatchesHost(wild, "10.0.0.17", 22), false);
  assert.equal(entryMatchesHost(wild, "bad.example", 22), false);
  assert.equal(entryMatchesHost(wild, "example", 22), false);

  const wildPort = one(`[*.example]:* ${KEY_A}`);
  assert.ok(entryMatchesHost(wildPort, "pi.example", 2222));
  assert.equal(entryMatchesHost(wildPort, "pi.example", 22), false);
});

Deno.test("hashed entries: one computed here with HMAC-SHA1, one written by ssh-keygen -H", () => {
  const salt = Buffer.from("0123456789abcdefghij");
  const mac = createHmac("sha1", salt).update("10.0.0.5").digest("base64");
  const field = `|1|${salt.toString("base64")}|${mac}`;
  assert.equal(hashKnownHostsName("10.0.0.5", salt), field);
  const mine = one(`${field} ${KEY_A}`);
  assert.ok(entryMatchesHost(mine, "10.0.0.5", 22));
  assert.equal(entryMatchesHost(mine, "10.0.0.6", 22), false);
  assert.equal(entryMatchesHost(mine, "10.0.0.5", 2222), false);

  const openssh = one(`${OPENSSH_HASHED} ${KEY_A}`);
  assert.ok(entryMatchesHost(openssh, "pi.example", 2222));
  assert.ok(entryMatchesHost(openssh, "PI.EXAMPLE", 2222));
  assert.equal(entryMatchesHost(openssh, "pi.example", 22), false);
  assert.equal(entryMatchesHost(one(`|1|bad ${KEY_A}`), "pi.example", 22), false);
});

Deno.test("host key verdicts: trusted, mismatch, unknown", () => {
  const entries = parseKnownHosts(
    [`pi.example ${KEY_A}`, `pi.example ${KEY_C}`, `${OPENSSH_HASHED} ${KEY_A}`].join("\n"),
  );
  assert.deepEqual(checkHostKey(entries, "pi.example", 22, key(KEY_A)), { kind: "trusted" });
  assert.deepEqual(checkHostKey(entries, "pi.example", 22, key(KEY_C)), { kind: "trusted" });
  assert.deepEqual(checkHostKey(entries, "pi.example", 2222, key(KEY_A)), { kind: "trusted" });
  assert.deepEqual(checkHostKey(entries, "pi.example", 22, key(KEY_B)), {
    kind: "mismatch",
    known: [FP_A, FP_C],
  });
  assert.deepEqual(checkHostKey(entries, "other.example", 22, key(KEY_A)), { kind: "unknown" });
  assert.deepEqual(checkHostKey([], "pi.example", 22, key(KEY_A)), { kind: "unknown" });
});

Deno.test("@revoked refuses the key for every host; @cert-authority is ignored", () => {
  const entries = parseKnownHosts(
    [`pi.example ${KEY_A}`, `@revoked other.example ${KEY_A}`, `@cert-authority * ${KEY_B}`]
      .join("\n"),
  );
  assert.deepEqual(checkHostKey(entries, "pi.example", 22, key(KEY_A)), {
    kind: "revoked",
    line: 2,
  });
  assert.deepEqual(checkHostKey(entries, "new.example", 22, key(KEY_B)), { kind: "unknown" });
  assert.deepEqual(knownKeyTypes(entries, "pi.example", 22), ["ssh-ed25519"]);
  assert.deepEqual(knownKeyTypes(entries, "new.example", 22), []);
});
