/**
 * What the arm64 device test needs, set up idempotently: the Debian packages that run Deno's arm64
 * build on this (x86_64) machine under qemu user emulation ({@link ARM64_PACKAGES}), and that build
 * itself at this Deno's version, fetched from the npm registry (ops/build/deno_for_arch.ts), then
 * checked to run under `qemu-aarch64-static` and report `Deno.build.arch` "aarch64".
 *
 * `deno task setup` (e2e/harness.ts) installs the packages with the other host packages and then
 * runs {@link ensureArm64Deno}; the arm64 test runs both itself when run on its own. As a script,
 * `deno run -P=e2e e2e/arm64_setup.ts` does both and prints one JSON line, an {@link Arm64Deno}.
 * The emulator is named by its absolute path (as in the e2e permission set): Deno resolves
 * `--allow-run` names on the PATH when a process starts, so a name would not be allowed in the
 * process that installed it, and a path is.
 *
 * @module
 */
import { denoBuildPath, denoForArch } from "@aranya/ops/build/deno_for_arch";
import { ARM64_PACKAGES, ensureHostPackages } from "./host_setup.ts";
import { ROOT } from "./paths.ts";

/** The emulator that runs the arm64 Deno (Debian's qemu-user-static), as deno.json allows it. */
export const QEMU_AARCH64 = "/usr/bin/qemu-aarch64-static";

/** Deno's arm64 build, ready to run under {@link QEMU_AARCH64}. */
export interface Arm64Deno {
  /** The emulator's absolute path. */
  qemu: string;
  /** The arm64 `deno` executable (absolute). */
  deno: string;
  /** Its version (this Deno's). */
  version: string;
  /** How long `deno eval` of one line took under emulation, seconds. */
  evalSeconds: number;
}

/** True when the emulator is installed. */
export async function hasQemuAarch64(): Promise<boolean> {
  try {
    const info = await Deno.stat(QEMU_AARCH64);
    return info.isFile && ((info.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * Fetches Deno's arm64 build (when it is not in the cache yet) and checks that it runs under
 * qemu: `deno eval` prints `Deno.build.arch` and the version.
 *
 * @throws Error when qemu is not installed, or the build does not run or reports something else.
 */
export async function ensureArm64Deno(log: (line: string) => void): Promise<Arm64Deno> {
  const qemu = QEMU_AARCH64;
  if (!(await hasQemuAarch64())) {
    throw new Error(
      `"${QEMU_AARCH64}" is not installed; run "deno task setup" (Debian package "qemu-user-static")`,
    );
  }
  const deno = await denoForArch("aarch64", { root: ROOT, log });
  const t0 = performance.now();
  const out = await new Deno.Command(qemu, {
    args: [deno, "eval", "--quiet", "console.log(Deno.build.arch, Deno.version.deno)"],
    cwd: ROOT,
    env: {
      DENO_DIR: `${denoBuildPath("aarch64", ROOT)}-dir`,
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const evalSeconds = (performance.now() - t0) / 1000;
  const dec = new TextDecoder();
  const said = dec.decode(out.stdout).trim();
  const want = `aarch64 ${Deno.version.deno}`;
  if (!out.success || said !== want) {
    throw new Error(
      `"${QEMU_AARCH64} ${deno} eval" printed "${said}" (code ${out.code}), not "${want}": ${
        dec.decode(out.stderr).trim().slice(-2000)
      }`,
    );
  }
  log(`arm64 deno ${Deno.version.deno} runs under ${QEMU_AARCH64} (${evalSeconds.toFixed(1)} s)`);
  return { qemu, deno, version: Deno.version.deno, evalSeconds };
}

if (import.meta.main) {
  const say = (line: string) => console.error(`[arm64-setup] ${line}`);
  try {
    await ensureHostPackages(say, ARM64_PACKAGES);
    console.log(JSON.stringify(await ensureArm64Deno(say)));
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
}
