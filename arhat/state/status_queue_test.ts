import assert from "node:assert/strict";
import { createLogger } from "@aranya/common/log";
import { encodeRecord } from "./record.ts";
import { StatusQueue } from "./status_queue.ts";
import { listNames, tempStateDir } from "./testing/temp_state_dir.ts";

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const snapshot = (q: StatusQueue) => q.entries().map((e) => `${e.uid}=${str(e.bytes)}`);

Deno.test("StatusQueue keeps the latest status per pod in arrival order, across a restart", async () => {
  const dir = await tempStateDir();
  try {
    const queue = await StatusQueue.open({ stateDir: dir.path });
    await queue.enqueue("a", text("a1"));
    await queue.enqueue("b", text("b1"));
    await queue.enqueue("a", text("a2"));
    await queue.enqueue("c", text("c1"));
    assert.deepEqual(snapshot(queue), ["b=b1", "a=a2", "c=c1"]);
    assert.equal(queue.size, 3);
    assert.deepEqual(await listNames(queue.dir), [
      "0000000000000002-b.status",
      "0000000000000003-a.status",
      "0000000000000004-c.status",
    ]);

    const reopened = await StatusQueue.open({ stateDir: dir.path });
    assert.deepEqual(snapshot(reopened), ["b=b1", "a=a2", "c=c1"]);
    await reopened.enqueue("b", text("b2")); // numbering continues after the restart
    assert.deepEqual(snapshot(reopened), ["a=a2", "c=c1", "b=b2"]);
    assert.ok((await listNames(reopened.dir)).includes("0000000000000005-b.status"));
  } finally {
    await dir.cleanup();
  }
});

Deno.test("StatusQueue.drain() sends oldest first and removes each entry after its send", async () => {
  const dir = await tempStateDir();
  try {
    const queue = await StatusQueue.open({ stateDir: dir.path });
    for (const uid of ["a", "b", "c"]) await queue.enqueue(uid, text(`${uid}1`));
    const sent: string[] = [];
    const n = await queue.drain(async (bytes, uid) => {
      // While a status is in flight its entry is still on disk.
      assert.ok((await listNames(queue.dir)).some((f) => f.endsWith(`-${uid}.status`)));
      sent.push(`${uid}=${str(bytes)}`);
    });
    assert.equal(n, 3);
    assert.deepEqual(sent, ["a=a1", "b=b1", "c=c1"]);
    assert.equal(queue.size, 0);
    assert.deepEqual(await listNames(queue.dir), []);
    assert.equal(await queue.drain(() => Promise.reject(new Error("not called"))), 0);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("StatusQueue.drain() keeps the entry whose send failed and everything after it", async () => {
  const dir = await tempStateDir();
  try {
    const queue = await StatusQueue.open({ stateDir: dir.path });
    for (const uid of ["a", "b", "c"]) await queue.enqueue(uid, text(`${uid}1`));
    const sent: string[] = [];
    await assert.rejects(
      queue.drain((_bytes, uid) => {
        if (uid === "b") return Promise.reject(new Error("link lost"));
        sent.push(uid);
        return Promise.resolve();
      }),
      /link lost/,
    );
    assert.deepEqual(sent, ["a"]);
    assert.deepEqual(snapshot(queue), ["b=b1", "c=c1"]);
    const reopened = await StatusQueue.open({ stateDir: dir.path });
    assert.deepEqual(snapshot(reopened), ["b=b1", "c=c1"]);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("StatusQueue.drain() delivers a status that replaced the one in flight", async () => {
  const dir = await tempStateDir();
  try {
    const queue = await StatusQueue.open({ stateDir: dir.path });
    await queue.enqueue("a", text("a1"));
    await queue.enqueue("b", text("b1"));
    const sent: string[] = [];
    await queue.drain(async (bytes, uid) => {
      sent.push(`${uid}=${str(bytes)}`);
      if (sent.length === 1) await queue.enqueue("a", text("a2")); // arrives during the send
    });
    assert.deepEqual(sent, ["a=a1", "b=b1", "a=a2"]);
    assert.equal(queue.size, 0);
    assert.deepEqual(await listNames(queue.dir), []);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("StatusQueue.open() resolves leftovers of a crash and skips corrupt files", async () => {
  const dir = await tempStateDir();
  try {
    const queue = await StatusQueue.open({ stateDir: dir.path });
    await queue.enqueue("a", text("a1"));
    await queue.enqueue("b", text("b1"));
    const qdir = queue.dir;
    // Crash after writing a's replacement but before removing the old file.
    await Deno.writeFile(
      `${qdir}/0000000000000007-a.status`,
      encodeRecord({ key: "a", payload: text("a2") }),
    );
    // Crash in the middle of writing c's temp file.
    await Deno.writeFile(`${qdir}/.0000000000000008-c.status.tmp-00000000000000ff`, text("AR"));
    // Bit rot, and a stray file that is not ours.
    await Deno.writeFile(`${qdir}/0000000000000003-d.status`, text("garbage"));
    await Deno.writeFile(`${qdir}/README`, text("not a status"));

    const lines: Record<string, unknown>[] = [];
    const log = createLogger({ level: "debug", sink: (l) => lines.push(JSON.parse(l)) });
    const reopened = await StatusQueue.open({ stateDir: dir.path, log });
    assert.deepEqual(snapshot(reopened), ["b=b1", "a=a2"]);
    assert.deepEqual(await listNames(qdir), [
      "0000000000000002-b.status",
      "0000000000000003-d.status.corrupt",
      "0000000000000007-a.status",
      "README",
    ]);
    assert.ok(
      lines.some((l) =>
        l.msg === "skipping corrupt state file" && l.path === `${qdir}/0000000000000003-d.status`
      ),
    );
    await reopened.enqueue("c", text("c1"));
    assert.deepEqual(snapshot(reopened), ["b=b1", "a=a2", "c=c1"]);
    assert.ok((await listNames(qdir)).includes("0000000000000008-c.status"));
  } finally {
    await dir.cleanup();
  }
});

Deno.test("StatusQueue.enqueue() refuses an empty uid", async () => {
  const dir = await tempStateDir();
  try {
    const queue = await StatusQueue.open({ stateDir: dir.path });
    await assert.rejects(queue.enqueue("", text("x")), /must not be empty/);
    assert.equal(queue.size, 0);
  } finally {
    await dir.cleanup();
  }
});
