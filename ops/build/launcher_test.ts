import assert from "node:assert/strict";
import { permissionSet, PROJECT_ROOT } from "./bundle.ts";
import { buildLauncher, LAUNCHER_REMOTE } from "./launcher.ts";

const OUT = `${PROJECT_ROOT}/.cache/launcher-test`;
/** A folder the arhat permission set may read (the test sockets' folder). */
const ALLOWED = "/tmp/aranya-e2e/launcher-test";

/** Runs the built launcher's bundle the way the launcher script does, with `-c config`. */
async function runBundle(config: string): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command("deno", {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--no-lock",
      "--cached-only",
      "--config",
      `${OUT}/deno.json`,
      "-P=arhat",
      `${OUT}/arhat.js`,
      "-c",
      config,
    ],
    cwd: "/",
    env: { NO_COLOR: "1", DENO_DIR: `${OUT}/deno-dir` },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test({
  name: "launcher: arhat bundled, run by deno with exactly the project's arhat permission set",
  sanitizeResources: false,
  fn: async () => {
    try {
      const files = await buildLauncher({ outDir: OUT });
      const remotes = files.map((f) => f.remote);
      assert.deepEqual(remotes.slice(0, 2), [LAUNCHER_REMOTE.deno, LAUNCHER_REMOTE.bundle]);
      assert.deepEqual(remotes.slice(-2), [LAUNCHER_REMOTE.config, "/usr/local/bin/arhat"]);
      // The bundle's chunks (the transports, loaded when dialled) go beside it.
      const chunks = remotes.slice(2, -2);
      assert.ok(chunks.length > 0);
      for (const c of chunks) {
        assert.match(c, /^\/usr\/local\/lib\/arhat\/[\w.-]+-[A-Z0-9]{8}\.js$/);
      }
      const bundleText = await Deno.readTextFile(`${OUT}/arhat.js`);
      assert.match(bundleText, /import\("\.\/ws_link_dialer-[A-Z0-9]{8}\.js"\)/);
      assert.doesNotMatch(bundleText, /[\u0080-\uffff]/);
      // The shipped permission set is the project's, unchanged: the one compile bakes in.
      const shipped = JSON.parse(await Deno.readTextFile(`${OUT}/deno.json`));
      assert.deepEqual(shipped, { permissions: { arhat: await permissionSet("arhat") } });
      const script = await Deno.readTextFile(`${OUT}/arhat`);
      assert.match(
        script,
        /--config \/usr\/local\/lib\/arhat\/deno.json -P=arhat --v8-flags=--max-semi-space-size=1,--lite-mode /,
      );
      assert.doesNotMatch(script, /\s-A\s|--allow-all/);
      // The bundle holds arhat's npm packages: nothing to fetch on the device.
      const bundle = await Deno.readTextFile(`${OUT}/arhat.js`);
      assert.doesNotMatch(bundle, /from "npm:/);

      // Inside the set (a folder it may read): arhat runs and names the bad field.
      await Deno.mkdir(ALLOWED, { recursive: true });
      await Deno.writeTextFile(`${ALLOWED}/config.yaml`, "device: { namespace: edge }\n");
      const inside = await runBundle(`${ALLOWED}/config.yaml`);
      assert.equal(inside.code, 2, inside.stderr); // arhat: invalid configuration
      assert.match(inside.stderr, /device\.name: is required/);
      // Outside the set: refused by Deno's permissions, not read.
      await Deno.writeTextFile(`${OUT}/config.yaml`, "device: { namespace: edge }\n");
      const outside = await runBundle(`${OUT}/config.yaml`);
      assert.equal(outside.code, 2, outside.stderr);
      assert.match(outside.stderr, /Requires read access to \\".*launcher-test\/config\.yaml\\"/);
    } finally {
      await Deno.remove(ALLOWED, { recursive: true }).catch(() => {});
      await Deno.remove(OUT, { recursive: true }).catch(() => {});
    }
  },
});
