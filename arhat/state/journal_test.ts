import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { InvalidInputError } from "@aranya/common/errors";
import { createLogger } from "@aranya/common/log";
import { PodEnsureCmdSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { PodJournal } from "./journal.ts";
import { encodeRecord } from "./record.ts";
import { listNames, tempStateDir } from "./testing/temp_state_dir.ts";

const UID_A = "0b6b08cd-0000-4000-8000-00000000000a";
const UID_B = "0b6b08cd-0000-4000-8000-00000000000b";

function pod(uid: string, name: string, specHash = "h1"): Uint8Array {
  return toBinary(
    PodEnsureCmdSchema,
    create(PodEnsureCmdSchema, {
      uid,
      namespace: "edge",
      name,
      specHash,
      containers: [{ name: "app", image: "localhost/aranya-e2e/busybox:test" }],
    }),
  );
}

function capture() {
  const lines: Record<string, unknown>[] = [];
  return { lines, log: createLogger({ level: "debug", sink: (l) => lines.push(JSON.parse(l)) }) };
}

Deno.test("PodJournal keeps pods across a restart and forgets deleted ones", async () => {
  const dir = await tempStateDir();
  try {
    const first = await PodJournal.open({ stateDir: dir.path });
    assert.equal(first.size, 0);
    await first.put(UID_A, pod(UID_A, "a"));
    await first.put(UID_B, pod(UID_B, "b"));
    await first.put(UID_A, pod(UID_A, "a", "h2"));

    const second = await PodJournal.open({ stateDir: dir.path }); // "restart"
    assert.deepEqual(second.list().map((p) => p.uid), [UID_A, UID_B]);
    const a = fromBinary(PodEnsureCmdSchema, second.get(UID_A)!);
    assert.equal(a.specHash, "h2");
    assert.equal(a.containers[0]?.image, "localhost/aranya-e2e/busybox:test");
    assert.deepEqual(second.get(UID_B), pod(UID_B, "b"));

    assert.equal(await second.delete(UID_B), true);
    assert.equal(await second.delete(UID_B), false);
    assert.equal(await second.delete("never-journaled"), false);
    assert.deepEqual(await listNames(second.dir), [`${UID_A}.pod`]);
    const third = await PodJournal.open({ stateDir: dir.path });
    assert.deepEqual(third.list().map((p) => p.uid), [UID_A]);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("PodJournal ignores and removes the temp file of an interrupted write", async () => {
  const dir = await tempStateDir();
  try {
    const journal = await PodJournal.open({ stateDir: dir.path });
    await journal.put(UID_A, pod(UID_A, "a", "old"));
    // A crash after writing half of the replacement's temp file, before the rename.
    const torn = encodeRecord({ key: UID_A, payload: pod(UID_A, "a", "new") });
    const tempName = `.${UID_A}.pod.tmp-0123456789abcdef`;
    await Deno.writeFile(`${journal.dir}/${tempName}`, torn.subarray(0, torn.length >> 1));

    const { lines, log } = capture();
    const reopened = await PodJournal.open({ stateDir: dir.path, log });
    assert.equal(fromBinary(PodEnsureCmdSchema, reopened.get(UID_A)!).specHash, "old");
    assert.deepEqual(await listNames(reopened.dir), [`${UID_A}.pod`]);
    assert.ok(
      lines.some((l) => l.msg === "removed temp files of interrupted writes" && l.count === 1),
    );
  } finally {
    await dir.cleanup();
  }
});

Deno.test("PodJournal skips, logs and sets aside corrupt files without failing", async () => {
  const dir = await tempStateDir();
  try {
    const journal = await PodJournal.open({ stateDir: dir.path });
    await journal.put(UID_A, pod(UID_A, "a"));
    const good = await Deno.readFile(`${journal.dir}/${UID_A}.pod`);
    const flipped = good.slice();
    flipped[flipped.length - 3]! ^= 0xff;
    const corrupt: [string, Uint8Array][] = [
      [`${UID_B}.pod`, flipped], // bit rot
      ["c.pod", new TextEncoder().encode("not a record")],
      ["d.pod", new Uint8Array()],
      ["e.pod", good], // a record copied under another pod's name
      ["f.pod", encodeRecord({ key: "f", payload: new Uint8Array([0xff, 0xff]) })], // not protobuf
    ];
    for (const [name, bytes] of corrupt) await Deno.writeFile(`${journal.dir}/${name}`, bytes);

    const { lines, log } = capture();
    const reopened = await PodJournal.open({ stateDir: dir.path, log });
    assert.deepEqual(reopened.list().map((p) => p.uid), [UID_A]);
    const warned = lines.filter((l) => l.msg === "skipping corrupt state file").map((l) => l.path);
    assert.deepEqual(warned.sort(), corrupt.map(([n]) => `${journal.dir}/${n}`).sort());
    assert.deepEqual(
      await listNames(reopened.dir),
      [`${UID_A}.pod`, ...corrupt.map(([n]) => `${n}.corrupt`)].sort(),
    );
    // Set aside once: the next start is quiet.
    const quiet = capture();
    await PodJournal.open({ stateDir: dir.path, log: quiet.log });
    assert.equal(quiet.lines.filter((l) => l.level === "warn").length, 0);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("PodJournal.put() refuses bytes that are not the named pod's spec", async () => {
  const dir = await tempStateDir();
  try {
    const journal = await PodJournal.open({ stateDir: dir.path });
    await assert.rejects(journal.put(UID_A, pod(UID_B, "b")), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError);
      assert.equal(
        err.message,
        `Pod "${UID_A}" cannot be journaled: its spec has uid "${UID_B}"`,
      );
      return true;
    });
    await assert.rejects(journal.put(UID_A, new Uint8Array([0xff, 0xff])), InvalidInputError);
    assert.equal(journal.size, 0);
    assert.deepEqual(await listNames(journal.dir), []);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("PodJournal applies concurrent writes in call order", async () => {
  const dir = await tempStateDir();
  try {
    const journal = await PodJournal.open({ stateDir: dir.path });
    await Promise.all([
      journal.put(UID_A, pod(UID_A, "a", "1")),
      journal.put(UID_A, pod(UID_A, "a", "2")),
      journal.delete(UID_A),
      journal.put(UID_A, pod(UID_A, "a", "3")),
      journal.put(UID_B, pod(UID_B, "b")),
      journal.delete(UID_B),
    ]);
    const reopened = await PodJournal.open({ stateDir: dir.path });
    assert.deepEqual(reopened.list().map((p) => p.uid), [UID_A]);
    assert.equal(fromBinary(PodEnsureCmdSchema, reopened.get(UID_A)!).specHash, "3");
    assert.equal(fromBinary(PodEnsureCmdSchema, journal.get(UID_A)!).specHash, "3");
  } finally {
    await dir.cleanup();
  }
});
