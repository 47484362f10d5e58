import assert from "node:assert/strict";
import { PROJECT_ROOT } from "./bundle.ts";
import { denoBuildPath, denoForArch, elfArch, type LinuxArch } from "./deno_for_arch.ts";

/** The first 20 bytes of a 64-bit little-endian ELF of type `type` for machine `machine`. */
function elfHead(machine: number, type = 3): Uint8Array {
  const h = new Uint8Array(20);
  h.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  h[16] = type;
  h[18] = machine & 0xff;
  h[19] = machine >> 8;
  return h;
}

async function head(path: string): Promise<Uint8Array> {
  const f = await Deno.open(path);
  try {
    const h = new Uint8Array(20);
    await f.read(h);
    return h;
  } finally {
    f.close();
  }
}

const OTHER: LinuxArch = Deno.build.arch === "x86_64" ? "aarch64" : "x86_64";

Deno.test("deno for arch: ELF headers name their machine; anything else is refused", async () => {
  assert.equal(elfArch(elfHead(62)), "x86_64");
  assert.equal(elfArch(elfHead(183)), "aarch64");
  assert.equal(elfArch(elfHead(183, 2)), "aarch64"); // ET_EXEC as well as ET_DYN (PIE)
  assert.equal(elfArch(elfHead(183, 1)), undefined); // a relocatable object
  assert.equal(elfArch(elfHead(40)), undefined); // 32-bit ARM's machine number
  assert.equal(elfArch(elfHead(183).subarray(0, 19)), undefined);
  const notElf = elfHead(183);
  notElf[1] = 0x46;
  assert.equal(elfArch(notElf), undefined);
  const bigEndian = elfHead(183);
  bigEndian[5] = 2;
  assert.equal(elfArch(bigEndian), undefined);
  assert.equal(elfArch(await head(Deno.execPath())), Deno.build.arch);
});

Deno.test("deno for arch: this machine's architecture is this deno", async () => {
  assert.equal(await denoForArch(Deno.build.arch), Deno.execPath());
});

Deno.test({
  name: "deno for arch: another architecture's deno comes from npm at this version, checked, " +
    "cached; a cached file for the wrong machine is fetched again",
  sanitizeResources: false,
  fn: async () => {
    const lines: string[] = [];
    const path = await denoForArch(OTHER, { log: (l) => lines.push(l) });
    assert.equal(path, denoBuildPath(OTHER, PROJECT_ROOT));
    assert.match(path, new RegExp(`/\\.cache/deno-builds/${Deno.version.deno}-${OTHER}/deno$`));
    assert.equal(elfArch(await head(path)), OTHER);
    assert.equal((await Deno.stat(path)).mode! & 0o755, 0o755);
    // Cached: a second call fetches nothing.
    lines.length = 0;
    assert.equal(await denoForArch(OTHER, { log: (l) => lines.push(l) }), path);
    assert.equal(lines.length, 0, lines.join("\n"));

    // A wrong file in another root's cache (this machine's deno) is replaced by a fetch.
    const root = await Deno.makeTempDir({ dir: `${PROJECT_ROOT}/.cache`, prefix: "deno-arch-" });
    try {
      const wrong = denoBuildPath(OTHER, root);
      await Deno.mkdir(wrong.slice(0, wrong.lastIndexOf("/")), { recursive: true });
      await Deno.copyFile(Deno.execPath(), wrong);
      const fetched = await denoForArch(OTHER, { root, log: (l) => lines.push(l) });
      assert.equal(fetched, wrong);
      assert.equal(elfArch(await head(fetched)), OTHER);
      assert.match(lines.join("\n"), /fetching @deno\/linux-(arm64|x64)-glibc@\d+\.\d+\.\d+/);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
