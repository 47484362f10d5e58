/**
 * Volume files on the real filesystem: a volume's folder keeps its identity
 * across updates (it is bind-mounted into running containers), changed files
 * are replaced, unchanged ones are left alone, and files that left the volume
 * are removed.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { VolumeSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { ensureSubPath, prepareHostPath, writeVolumes } from "./volumes.ts";
import { CACHE } from "@aranya/e2e/paths";

async function cacheDir(): Promise<string> {
  await Deno.mkdir(`${CACHE}/tmp`, { recursive: true });
  return `${CACHE}/tmp`;
}

const enc = new TextEncoder();

/** Deno.symlink needs unscoped read and write permissions; `ln` in sh does not. */
async function symlink(target: string, path: string): Promise<void> {
  const out = await new Deno.Command("sh", { args: ["-c", 'ln -s "$0" "$1"', target, path] })
    .output();
  assert.ok(out.success, `ln -s ${target} ${path}`);
}

function dataVolume(files: Record<string, string>, mode = 0o644) {
  return create(VolumeSchema, {
    name: "cfg",
    source: {
      case: "data",
      value: {
        files: Object.entries(files).map(([path, text]) => ({
          path,
          data: enc.encode(text),
          mode,
        })),
      },
    },
  });
}

Deno.test("data volumes are updated in place: same folder, changed files replaced, stale removed", async () => {
  const state = await Deno.makeTempDir({ dir: await cacheDir(), prefix: "arhat-volumes-" });
  try {
    const paths = await writeVolumes(state, "uid1", [
      dataVolume({ "a.conf": "one", "sub/b.conf": "two", "keep": "same" }),
    ]);
    const dir = paths.get("cfg")!;
    const ino = (await Deno.stat(dir)).ino;
    const keptMtime = (await Deno.stat(`${dir}/keep`)).mtime?.getTime();
    await new Promise((r) => setTimeout(r, 20));

    await writeVolumes(state, "uid1", [dataVolume({ "a.conf": "ONE", keep: "same" })]);
    assert.equal((await Deno.stat(dir)).ino, ino, "the mounted folder is the same folder");
    assert.equal(await Deno.readTextFile(`${dir}/a.conf`), "ONE");
    assert.equal(
      (await Deno.stat(`${dir}/keep`)).mtime?.getTime(),
      keptMtime,
      "unchanged file untouched",
    );
    await assert.rejects(
      Deno.stat(`${dir}/sub`),
      Deno.errors.NotFound,
      "stale file and folder removed",
    );
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["a.conf", "keep"],
      "no temporary files left",
    );

    await writeVolumes(state, "uid1", [dataVolume({ "a.conf": "ONE", keep: "same" }, 0o600)]);
    assert.equal((await Deno.stat(`${dir}/a.conf`)).mode! & 0o777, 0o600, "a mode change applies");
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("the folders above a volume are 0700, also when an earlier run left them open", async () => {
  const state = await Deno.makeTempDir({ dir: await cacheDir(), prefix: "arhat-volumes-" });
  try {
    await Deno.mkdir(`${state}/pods/uid1/volumes`, { recursive: true, mode: 0o755 });
    await Deno.chmod(`${state}/pods`, 0o755);
    await Deno.chmod(`${state}/pods/uid1`, 0o755);
    await Deno.chmod(`${state}/pods/uid1/volumes`, 0o755);
    const paths = await writeVolumes(state, "uid1", [dataVolume({ token: "secret" }, 0o644)]);
    for (const d of ["pods", "pods/uid1", "pods/uid1/volumes"]) {
      assert.equal((await Deno.stat(`${state}/${d}`)).mode! & 0o777, 0o700, d);
    }
    // The file keeps the pod's mode (non-root containers read it through the bind mount).
    assert.equal((await Deno.stat(`${paths.get("cfg")}/token`)).mode! & 0o777, 0o644);
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("data volume file paths must stay inside the volume", async () => {
  const state = await Deno.makeTempDir({ dir: await cacheDir(), prefix: "arhat-volumes-" });
  try {
    await assert.rejects(
      writeVolumes(state, "uid1", [dataVolume({ "../escape": "x" })]),
      /File of volume "cfg" "..\/escape" must be a relative path without ".."/,
    );
  } finally {
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("ensureSubPath: made with the volume's mode when missing; links out of the volume refused", async () => {
  const dir = await Deno.makeTempDir({ dir: await cacheDir(), prefix: "arhat-subpath-" });
  try {
    const base = `${dir}/vol`;
    await Deno.mkdir(base);
    await Deno.chmod(base, 0o777);
    assert.equal(await ensureSubPath(base, "a/b"), `${base}/a/b`);
    assert.equal((await Deno.stat(`${base}/a/b`)).mode! & 0o777, 0o777);
    await Deno.writeTextFile(`${base}/file`, "x");
    assert.equal(await ensureSubPath(base, "file"), `${base}/file`, "an existing file is kept");
    await symlink("/", `${base}/escape`);
    await assert.rejects(
      ensureSubPath(base, "escape"),
      /leaves its volume through a symbolic link/,
    );
    await assert.rejects(ensureSubPath(base, "escape/etc"), /leaves its volume/);
    await assert.rejects(ensureSubPath(base, "../x"), /must be relative/);
    await symlink("a", `${base}/inside`);
    assert.equal(
      await ensureSubPath(base, "inside/b"),
      `${base}/inside/b`,
      "links inside are fine",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hostPath types: made when asked, checked otherwise, refused clearly", async () => {
  const dir = await Deno.makeTempDir({ dir: await cacheDir(), prefix: "arhat-hostpath-" });
  try {
    await prepareHostPath(`${dir}/a/b`, "DirectoryOrCreate");
    assert.ok((await Deno.stat(`${dir}/a/b`)).isDirectory);
    assert.equal((await Deno.stat(`${dir}/a/b`)).mode! & 0o777, 0o755);
    await prepareHostPath(`${dir}/a/b`, "Directory");
    await prepareHostPath(`${dir}/f`, "FileOrCreate");
    assert.ok((await Deno.stat(`${dir}/f`)).isFile);
    await prepareHostPath(`${dir}/f`, "File");
    await assert.rejects(
      prepareHostPath(`${dir}/missing`, "Directory"),
      /hostPath ".*\/missing" of type "Directory" is not a directory/,
    );
    await assert.rejects(prepareHostPath(`${dir}/a`, "File"), /is not a file/);
    await assert.rejects(prepareHostPath(`${dir}/f`, "DirectoryOrCreate"), /is not a directory/);
    await assert.rejects(prepareHostPath(`${dir}/no/such/f`, "FileOrCreate"), /is not a file/);
    await assert.rejects(prepareHostPath(`${dir}/f`, "Socket"), /is not a socket/);
    await assert.rejects(
      prepareHostPath(`${dir}/f`, "Weird"),
      /type "Weird" is not a hostPath type/,
    );
    await assert.rejects(prepareHostPath("rel", "Directory"), /must be an absolute path/);
    await prepareHostPath(`${dir}/nothing-checked`, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
