/**
 * The arhat launcher: what the deployer ships when no compiled arhat exists (deno compile needs
 * the denort runtime, which cannot be downloaded offline).
 *
 * It is a `deno` executable for the device's architecture, arhat's bundle (its entry and chunks)
 * and its permission set (bundle.ts: npm packages included, so the device needs no registry), and
 * a shell script that runs `deno run --config deno.json -P=arhat <V8 flags> arhat.js`.
 * `deno task compile:arhat` compiles the same bundle with the same `--config deno.json -P=arhat`, so
 * the launcher runs the code and the permissions the binary has baked in. The `deno` is this
 * machine's own for a device of its architecture, else Deno's npm build of the same version for
 * the device's (deno_for_arch.ts; e2e/arm64_e2e_test.ts runs the aarch64 one under qemu).
 *
 * @module
 */
import { errorMessage, InternalError } from "@aranya/common/errors";
import { bundleProgram, PROJECT_ROOT, v8FlagsArgs } from "./bundle.ts";
import { denoForArch, type LinuxArch } from "./deno_for_arch.ts";

/** One file of an artifact and where it goes on the device. */
export interface ArtifactFile {
  /** Local file (absolute). */
  local: string;
  /** Absolute path on the device. */
  remote: string;
  mode: number;
}

/** Where the launcher's files go on a device. */
export const LAUNCHER_REMOTE = Object.freeze({
  dir: "/usr/local/lib/arhat",
  deno: "/usr/local/lib/arhat/deno",
  bundle: "/usr/local/lib/arhat/arhat.js",
  config: "/usr/local/lib/arhat/deno.json",
});

/** The launcher script; `bin` is where it is installed (it names the other files absolutely). */
export function launcherScript(): string {
  return `#!/bin/sh
# arhat launcher, installed by "deno task deploy" because no compiled arhat was available.
# It runs arhat with "deno run" and exactly the permission set the compiled binary has baked in
# (the "arhat" set of the project's deno.json, copied to ${LAUNCHER_REMOTE.config}) and V8 flags.
export DENO_DIR=/var/lib/arhat/.deno DENO_NO_UPDATE_CHECK=1 NO_COLOR=1
exec ${LAUNCHER_REMOTE.deno} run --quiet --no-prompt --no-lock --cached-only \\
  --config ${LAUNCHER_REMOTE.config} -P=arhat ${
    v8FlagsArgs("arhat").join(" ")
  } ${LAUNCHER_REMOTE.bundle} "$@"
`;
}

/** Options of {@link buildLauncher}. */
export interface BuildLauncherOptions {
  /** Output folder (created); default `<root>/dist/arhat-launcher`. */
  outDir?: string;
  root?: string;
  /**
   * The device's architecture (default this machine's): which `deno` is shipped
   * ({@link denoForArch}: fetched from the npm registry once for another architecture).
   */
  arch?: LinuxArch;
  /** Progress lines (a fetch of another architecture's deno). */
  log?: (line: string) => void;
}

/**
 * Builds the launcher's files into `outDir` (bundle, permission set, script, deno) and returns them
 * with their places on the device, the script last. Rebuilding unchanged sources gives the same
 * bytes, so a re-deploy copies nothing.
 *
 * @throws InternalError when `deno bundle` fails (its output is in the message), or the `deno` for
 *   `arch` cannot be had (deno_for_arch.ts).
 */
export async function buildLauncher(opts: BuildLauncherOptions = {}): Promise<ArtifactFile[]> {
  const root = opts.root ?? PROJECT_ROOT;
  const out = opts.outDir ?? `${root}/dist/arhat-launcher`;
  await Deno.mkdir(out, { recursive: true });
  const { chunks } = await bundleProgram({ program: "arhat", outDir: out, root });
  await Deno.writeTextFile(`${out}/arhat`, launcherScript());
  const deno = await denoForArch(opts.arch ?? Deno.build.arch, { root, log: opts.log });
  try {
    await Deno.copyFile(deno, `${out}/deno`);
  } catch (err) {
    throw new InternalError(`Copying "${deno}" into the launcher failed: ${errorMessage(err)}`);
  }
  return [
    { local: `${out}/deno`, remote: LAUNCHER_REMOTE.deno, mode: 0o755 },
    { local: `${out}/arhat.js`, remote: LAUNCHER_REMOTE.bundle, mode: 0o644 },
    // The bundle's chunks (bundle.ts), which it imports by name from its own folder.
    ...chunks.map((local) => ({
      local,
      remote: `${LAUNCHER_REMOTE.dir}/${local.slice(local.lastIndexOf("/") + 1)}`,
      mode: 0o644,
    })),
    { local: `${out}/deno.json`, remote: LAUNCHER_REMOTE.config, mode: 0o644 },
    { local: `${out}/arhat`, remote: "/usr/local/bin/arhat", mode: 0o755 },
  ];
}
