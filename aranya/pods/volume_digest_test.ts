import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { PodEnsureCmdSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { volumeDigest } from "./volume_digest.ts";

const enc = new TextEncoder();
const cmd = (files: { path: string; data: string; mode?: number }[], extra = {}) =>
  create(PodEnsureCmdSchema, {
    uid: "u",
    specHash: "h",
    ...extra,
    volumes: [
      { name: "scratch", source: { case: "emptyDir", value: true } },
      {
        name: "cfg",
        source: {
          case: "data",
          value: {
            files: files.map((f) => ({ ...f, data: enc.encode(f.data), mode: f.mode ?? 0o644 })),
          },
        },
      },
    ],
  });

Deno.test("volume digest: changes with any file's bytes, path or mode, nothing else", () => {
  const base = volumeDigest(cmd([{ path: "a", data: "1" }]));
  assert.equal(volumeDigest(cmd([{ path: "a", data: "1" }])), base, "stable");
  assert.equal(
    volumeDigest(cmd([{ path: "a", data: "1" }], { containers: [{ name: "c", env: { X: "2" } }] })),
    base,
    "env is not volume data",
  );
  assert.notEqual(volumeDigest(cmd([{ path: "a", data: "2" }])), base, "bytes");
  assert.notEqual(volumeDigest(cmd([{ path: "b", data: "1" }])), base, "path");
  assert.notEqual(volumeDigest(cmd([{ path: "a", data: "1", mode: 0o600 }])), base, "mode");
  assert.notEqual(
    volumeDigest(cmd([{ path: "a", data: "1" }, { path: "token", data: "t" }])),
    base,
    "a file added (a token)",
  );
  assert.notEqual(volumeDigest(cmd([])), base, "a file removed");
});

Deno.test("volume digest: a memory emptyDir (a 64-bit size limit) digests, and its size counts", () => {
  const mem = (size: bigint) =>
    create(PodEnsureCmdSchema, {
      volumes: [{ name: "m", source: { case: "memoryDir", value: { sizeLimitBytes: size } } }],
    });
  assert.equal(volumeDigest(mem(1n << 20n)), volumeDigest(mem(1n << 20n)));
  assert.notEqual(volumeDigest(mem(1n << 20n)), volumeDigest(mem(2n << 20n)));
});
