import assert from "node:assert/strict";
import { isTempFileName, removeFileDurable, writeFileAtomic } from "./atomic_file.ts";
import { listNames, tempStateDir } from "./testing/temp_state_dir.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("writeFileAtomic() creates and replaces a file, leaving no temp file", async () => {
  const dir = await tempStateDir();
  try {
    const path = `${dir.path}/a.pod`;
    await writeFileAtomic(path, text("one"));
    await writeFileAtomic(path, text("two, longer"));
    assert.equal(await Deno.readTextFile(path), "two, longer");
    assert.deepEqual(await listNames(dir.path), ["a.pod"]);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("writeFileAtomic() leaves the target and no temp file behind when it fails", async () => {
  const dir = await tempStateDir();
  try {
    // Renaming a file over a non-empty directory fails after the temp file was written.
    const target = `${dir.path}/target`;
    await Deno.mkdir(target);
    await Deno.writeTextFile(`${target}/keep`, "x");
    await assert.rejects(writeFileAtomic(target, text("new")));
    assert.deepEqual(await listNames(dir.path), ["target"]);
    assert.equal(await Deno.readTextFile(`${target}/keep`), "x");
    await assert.rejects(
      writeFileAtomic(`${dir.path}/missing/x`, text("new")),
      Deno.errors.NotFound,
    );
  } finally {
    await dir.cleanup();
  }
});

Deno.test("removeFileDurable() reports whether it removed something", async () => {
  const dir = await tempStateDir();
  try {
    await writeFileAtomic(`${dir.path}/f`, text("x"));
    assert.equal(await removeFileDurable(`${dir.path}/f`), true);
    assert.equal(await removeFileDurable(`${dir.path}/f`), false);
    assert.deepEqual(await listNames(dir.path), []);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("isTempFileName() recognises only temp files", () => {
  const cases: [string, boolean][] = [
    [".abc.pod.tmp-0123456789abcdef", true],
    ["abc.pod", false],
    [".abc.pod.tmp-0123", false],
    ["abc.pod.tmp-0123456789abcdef", false],
    [".abc.pod.corrupt", false],
  ];
  for (const [name, want] of cases) assert.equal(isTempFileName(name), want, name);
});
