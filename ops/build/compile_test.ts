/**
 * ops/build/compile.ts: the deno compile command line, the DENORT_BIN checks, the offline failure
 * through the real CLI (one clear message, exit code 1, no artifact), and a whole compile with a
 * stand-in runtime showing that the program's permission set from deno.json is baked in.
 */
import assert from "node:assert/strict";
import {
  artifactPath,
  compileArgs,
  CompileError,
  compileProgram,
  crashingNpmFiles,
  denortDownloadMessage,
  isDenortDownloadFailure,
  parseCompileArgs,
  PROJECT_ROOT,
  stderrTail,
} from "./compile.ts";

const AARCH64 = "aarch64-unknown-linux-gnu";
const X86_64 = "x86_64-unknown-linux-gnu";
/** Scratch space of these tests (the e2e permission set may write under .cache). */
const SCRATCH = `${PROJECT_ROOT}/.cache/compile-test`;
/** What `deno run -P=...` itself prints before any of our output. */
const DENO_P_WARNING = /^Warning Permissions in the config file is an experimental feature/;

/** deno compile's stderr when denort cannot be downloaded, as seen offline (colours removed). */
const DENORT_URL = "https://dl.deno.land/release/v2.9.5/denort-aarch64-unknown-linux-gnu.zip";
const OFFLINE_DNS = [
  "Warning Permissions in the config file is an experimental feature and may change in the future.",
  "Check arhat/main.ts",
  "Compile arhat/main.ts to dist/arhat-aarch64-unknown-linux-gnu",
  `Download ${DENORT_URL}`,
  "error: Writing deno compile executable to temporary file " +
  "'dist/arhat-aarch64-unknown-linux-gnu.tmp-661dc847553ea95b'",
  "",
  "Caused by:",
  "    0: Setting up base binary.",
  `    1: error sending request for url (${DENORT_URL}): client error (Connect): dns error: ` +
  "failed to lookup address information: Name or service not known",
  "    2: client error (Connect)",
  "    3: dns error",
  "    4: failed to lookup address information: Name or service not known",
  "",
  "Stack backtrace:",
  "   0: <unknown>",
  "",
].join("\n");

/** The cause deno reports when the proxy (or the server) refuses the connection. */
const REFUSED = `error sending request for url (${DENORT_URL}): client error (Connect): ` +
  "tcp connect error: Connection refused (os error 111)\n";

const TYPE_ERROR = `Check arhat/main.ts
TS2322 [ERROR]: Type 'string' is not assignable to type 'number'.
const x: number = "1";
      ^
    at file:///work/main/arhat/main.ts:10:7

error: Type checking failed.
`;

Deno.test("compileArgs bakes the program's permission set and names the artifact by target", () => {
  assert.deepEqual(compileArgs({ program: "arhat", target: AARCH64 }), [
    "compile",
    "--no-prompt",
    "--v8-flags=--max-semi-space-size=1,--lite-mode",
    "-P=arhat",
    "--target",
    AARCH64,
    "-o",
    `dist/arhat-${AARCH64}`,
    "arhat/main.ts",
  ]);
  assert.deepEqual(
    compileArgs({ program: "aranya", target: X86_64, outDir: "/tmp/out/", exclude: ["a", "b"] }),
    [
      "compile",
      "--no-prompt",
      "--v8-flags=--optimize-for-size",
      "-P=aranya",
      "--target",
      X86_64,
      "--exclude",
      "a",
      "--exclude",
      "b",
      "-o",
      `/tmp/out/aranya-${X86_64}`,
      "aranya/main.ts",
    ],
  );
  // arhat: its bundle with the bundle's own permission config and V8 flags, no lockfile.
  assert.deepEqual(
    compileArgs({
      program: "arhat",
      target: X86_64,
      bundle: {
        script: "/b/arhat.js",
        chunks: ["/b/chunk-ABCDEFGH.js"],
        config: "/b/deno.json",
        runFlags: ["--v8-flags=--x"],
      },
    }),
    [
      "compile",
      "--no-prompt",
      "--no-lock",
      "--config",
      "/b/deno.json",
      "--v8-flags=--x",
      "-P=arhat",
      "--target",
      X86_64,
      "-o",
      `dist/arhat-${X86_64}`,
      "/b/arhat.js",
    ],
  );
  assert.equal(artifactPath("dist", "arhat", X86_64), `dist/arhat-${X86_64}`);
});

Deno.test("parseCompileArgs: program, repeated --target, --out-dir; bad input is refused", () => {
  assert.deepEqual(parseCompileArgs(["arhat"]), { program: "arhat" });
  assert.deepEqual(
    parseCompileArgs(["aranya", "--target", X86_64, "--target", AARCH64, "--out-dir", "out"]),
    { program: "aranya", targets: [X86_64, AARCH64], outDir: "out" },
  );
  assert.throws(
    () => parseCompileArgs(["arhat", "--target", "riscv64gc-unknown-linux-gnu"]),
    (e: Error) => e instanceof CompileError && /Unknown target "riscv64gc-/.test(e.message),
  );
  assert.throws(
    () => parseCompileArgs(["kubelet"]),
    (e: Error) => e instanceof CompileError && /"arhat" or "aranya", got "kubelet"/.test(e.message),
  );
  assert.throws(() => parseCompileArgs([]), CompileError);
  assert.throws(() => parseCompileArgs(["arhat", "--bogus"]), CompileError);
});

Deno.test("DENORT_BIN naming no file fails before deno runs, naming the path", async () => {
  const missing = `${SCRATCH}/no-such-denort-${crypto.randomUUID()}`;
  await assert.rejects(
    // A deno that cannot be run: had the check not come first, the error would be about it.
    compileProgram({
      program: "arhat",
      targets: [AARCH64],
      denortBin: missing,
      deno: "/nonexistent/deno",
      log: () => {},
    }),
    (e: Error) => {
      assert.ok(e instanceof CompileError, String(e));
      assert.equal(
        e.message,
        `DENORT_BIN names "${missing}", which is not a file: point it at the denort binary ` +
          `unzipped from denort-<target>.zip for Deno ${Deno.version.deno}, or unset it to let ` +
          `deno compile download denort.`,
      );
      return true;
    },
  );
});

Deno.test("DENORT_BIN with two targets asks for --target", async () => {
  const file = new URL(import.meta.url).pathname; // exists; the target count is what fails
  for (const targets of [undefined, [X86_64, AARCH64] as const]) {
    await assert.rejects(
      compileProgram({
        program: "arhat",
        ...(targets ? { targets } : {}),
        denortBin: file,
        deno: "/nonexistent/deno",
        log: () => {},
      }),
      (e: Error) => {
        assert.ok(e instanceof CompileError, String(e));
        assert.equal(
          e.message,
          `DENORT_BIN ("${file}") is the denort runtime of one target, but 2 targets were ` +
            `asked for ("${X86_64}", "${AARCH64}"): pass --target with the one target that ` +
            `denort was built for.`,
        );
        return true;
      },
    );
  }
});

Deno.test("deno's stderr: a denort download failure is told apart from other failures", () => {
  assert.equal(isDenortDownloadFailure(OFFLINE_DNS), true);
  const refused = OFFLINE_DNS.replace(/1: error sending request[^]*/, "1: " + REFUSED);
  assert.equal(isDenortDownloadFailure(refused), true);
  assert.equal(isDenortDownloadFailure(`\x1b[31merror\x1b[0m: ${refused}`), true);
  assert.equal(isDenortDownloadFailure(TYPE_ERROR), false);
  assert.equal(
    isDenortDownloadFailure(
      "Compile arhat/main.ts to dist/x\n\nthread 'tokio-runtime-worker' (9) has overflowed " +
        "its stack\nfatal runtime error: stack overflow, aborting\n",
    ),
    false,
  );
  assert.equal(
    isDenortDownloadFailure(
      "error: Writing deno compile executable\n\nCaused by:\n    0: Could not find denort at " +
        "'/x'\n    1: No such file or directory (os error 2)\n",
    ),
    false,
  );
  // The tail shown for other failures: deno's own lines, without its stack backtrace.
  const tail = stderrTail(OFFLINE_DNS);
  assert.match(tail, /Caused by:/);
  assert.doesNotMatch(tail, /Stack backtrace|<unknown>|experimental feature/);
  assert.equal(
    stderrTail(TYPE_ERROR, 2),
    "    at file:///work/main/arhat/main.ts:10:7\n" +
      "error: Type checking failed.",
  );
});

Deno.test("crashingNpmFiles finds bintrees' test data in node_modules", async () => {
  const root = `${SCRATCH}/root-${crypto.randomUUID().slice(0, 8)}`;
  try {
    assert.deepEqual(await crashingNpmFiles(root), [], "no node_modules: nothing to leave out");
    const test = "node_modules/.deno/bintrees@1.0.2/node_modules/bintrees/test";
    await Deno.mkdir(`${root}/${test}`, { recursive: true });
    await Deno.mkdir(`${root}/node_modules/.deno/yaml@2.9.1/node_modules/yaml/test`, {
      recursive: true,
    });
    assert.deepEqual(await crashingNpmFiles(root), [test]);
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

/** The environment of a child deno, without the variables that would change its network path. */
function childEnv(extra: Record<string, string>): Record<string, string> {
  const env = Deno.env.toObject();
  for (const k of Object.keys(env)) {
    if (/^(DENORT_BIN|DENO_DIR|NO_PROXY|ALL_PROXY|HTTPS?_PROXY)$/i.test(k)) delete env[k];
  }
  return { ...env, NO_COLOR: "1", ...extra };
}

Deno.test({
  name: "offline: the real CLI fails with one clear message, exit code 1 and no artifact",
  fn: async () => {
    const run = crypto.randomUUID().slice(0, 8);
    const outDir = `.cache/compile-test/offline-${run}`;
    // An empty DENO_DIR holds no cached denort, and the proxy (the discard port on loopback)
    // refuses every download, so this fails the same way on a machine with network. The npm
    // packages come from the project's node_modules, which deno uses without DENO_DIR's cache.
    const denoDir = `${SCRATCH}/deno-dir-${run}`;
    await Deno.mkdir(denoDir, { recursive: true });
    // The machine's npm cache and esbuild (under dl/) are linked in: arhat is bundled first, and
    // deno bundle runs esbuild, fetched once from npm; denort (also under dl/) stays missing.
    const info = await new Deno.Command("deno", { args: ["info", "--json"], stdout: "piped" })
      .output();
    const { denoDir: real } = JSON.parse(new TextDecoder().decode(info.stdout)) as {
      denoDir: string;
    };
    // sh: Deno.symlink needs unscoped write permission.
    const ln = await new Deno.Command("sh", {
      args: [
        "-c",
        'mkdir -p "$1/dl" && ln -s "$0/npm" "$1/npm" && for e in "$0"/dl/esbuild-*; do ' +
        '[ -e "$e" ] && ln -s "$e" "$1/dl/"; done; true',
        real,
        denoDir,
      ],
    }).output();
    assert.ok(ln.success, "linking the npm cache and esbuild");
    const proxy = "http://127.0.0.1:9";
    try {
      const out = await new Deno.Command("deno", {
        args: [
          "run",
          "-P=ops",
          "ops/build/compile.ts",
          "arhat",
          "--target",
          AARCH64,
          "--out-dir",
          outDir,
        ],
        cwd: PROJECT_ROOT,
        clearEnv: true,
        env: childEnv({
          // Empty counts as unset (deno itself would take "" for a path).
          DENORT_BIN: "",
          DENO_DIR: denoDir,
          HTTPS_PROXY: proxy,
          HTTP_PROXY: proxy,
          https_proxy: proxy,
          http_proxy: proxy,
        }),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      const ours = stderr.split("\n").filter((l) => l.trim() !== "" && !DENO_P_WARNING.test(l));
      assert.equal(out.code, 1, `exit code; stderr:\n${stderr}`);
      assert.deepEqual(ours, [denortDownloadMessage("arhat", AARCH64)], `stderr:\n${stderr}`);
      assert.doesNotMatch(stderr, /Stack backtrace|Caused by|Uncaught|^\s+at /m);
      assert.match(stdout, /^Compiling "arhat" for "aarch64-unknown-linux-gnu" \.\.\.$/m);
      const left = [];
      try {
        for await (const e of Deno.readDir(`${PROJECT_ROOT}/${outDir}`)) left.push(e.name);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
      // The bundle (compiled before the failed download) stays; no binary, no temporary files.
      assert.deepEqual(left, ["arhat-bundle"]);
    } finally {
      await Deno.remove(denoDir, { recursive: true }).catch(() => {});
      await Deno.remove(`${PROJECT_ROOT}/${outDir}`, { recursive: true }).catch(() => {});
    }
  },
});

/** Finds `needle` in `hay` from `from`; -1 when absent. */
function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  for (let i = hay.indexOf(needle[0]!, from); i !== -1; i = hay.indexOf(needle[0]!, i + 1)) {
    let j = 1;
    while (j < needle.length && hay[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
  }
  return -1;
}

/** The JSON object that starts at `start` in `bytes` (strings with braces are handled). */
function jsonObjectAt(bytes: Uint8Array, start: number): unknown {
  let depth = 0;
  let inString = false;
  for (let i = start; i < bytes.length; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b) depth++;
    else if (c === 0x7d && --depth === 0) {
      return JSON.parse(new TextDecoder().decode(bytes.subarray(start, i + 1)));
    }
  }
  throw new Error(`No complete JSON object at byte ${start}`);
}

Deno.test({
  name: "with a stand-in denort the compile succeeds and bakes in arhat's permission set",
  fn: async () => {
    // deno itself stands in for denort (this machine cannot download one): the binary it makes
    // does not run arhat, but everything before is real: the bundle and its permission config,
    // the command line, deno compile, the artifact and its report, and the metadata deno writes
    // into the binary, where the permission set ends up.
    const outDir = `.cache/compile-test/standin-${crypto.randomUUID().slice(0, 8)}`;
    const lines: string[] = [];
    try {
      const [artifact] = await compileProgram({
        program: "arhat",
        targets: [X86_64],
        outDir,
        denortBin: Deno.execPath(),
        log: (l) => lines.push(l),
      });
      const path = `${outDir}/arhat-${X86_64}`;
      assert.equal(artifact?.path, path);
      const bytes = await Deno.readFile(`${PROJECT_ROOT}/${path}`);
      assert.equal(artifact?.bytes, bytes.length);
      assert.deepEqual(lines, [
        `Compiling "arhat" for "${X86_64}" ...`,
        `${path}  ${(bytes.length / 1024 / 1024).toFixed(1)} MB`,
      ]);

      const at = indexOfBytes(bytes, new TextEncoder().encode('{"argv":['));
      assert.ok(at >= 0, "deno compile's metadata is in the binary");
      const meta = jsonObjectAt(bytes, at) as { permissions: Record<string, unknown> };
      const config = JSON.parse(await Deno.readTextFile(`${PROJECT_ROOT}/deno.json`));
      const set = config.permissions.arhat;
      // Relative entries resolve beside the bundle's deno.json, which holds the set verbatim.
      const bundleDir = `${PROJECT_ROOT}/${outDir}/arhat-bundle`;
      const shipped = JSON.parse(await Deno.readTextFile(`${bundleDir}/deno.json`));
      assert.deepEqual(shipped, { permissions: { arhat: set } });
      const abs = (p: string) => p.startsWith("./") ? `${bundleDir}/${p.slice(2)}` : p;
      // The binary embeds the 2.5 MB bundle, not the project's node_modules (100+ MB).
      const runtime = (await Deno.stat(Deno.execPath())).size;
      assert.ok(
        bytes.length - runtime < 8 * 1024 * 1024,
        `embedded payload ${((bytes.length - runtime) / 1048576).toFixed(1)} MB`,
      );
      const p = meta.permissions;
      assert.deepEqual(p.allow_read, set.read.map(abs));
      assert.deepEqual(p.allow_write, set.write.map(abs));
      assert.deepEqual(p.allow_run, set.run);
      assert.deepEqual(p.allow_sys, set.sys);
      // `true` in deno.json is "everything", an empty list in the metadata.
      assert.equal(set.net, true);
      assert.deepEqual(p.allow_net, []);
      assert.equal(set.env, true);
      assert.deepEqual(p.allow_env, []);
      assert.equal(p.allow_ffi, null, "no FFI");
      assert.equal(p.prompt, false, "--no-prompt");
    } finally {
      await Deno.remove(`${PROJECT_ROOT}/${outDir}`, { recursive: true }).catch(() => {});
    }
  },
});
