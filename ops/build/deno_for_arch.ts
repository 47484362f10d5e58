/**
 * The Deno executable for a Linux device architecture, at this Deno's version (`Deno.version.deno`):
 * this machine's own executable for its architecture, else Deno's npm build for that architecture
 * (`@deno/linux-<arch>-glibc`, the package `npm install deno` picks per platform), fetched once with
 * `npm pack` from the npm registry (npm's own config: registry, proxy, CA) into
 * `<root>/.cache/deno-builds/<version>-<arch>/deno`.
 *
 * A fetched executable is checked before it is used: its package version is this Deno's and the
 * file is a 64-bit ELF executable for that machine (the ELF header's `e_machine`), so a wrong or
 * truncated download is never shipped. It cannot be run here (another architecture); the arm64
 * test runs it under qemu user emulation (e2e/arm64_setup.ts).
 *
 * @module
 */
import { errorMessage, InternalError } from "@aranya/common/errors";
import { PROJECT_ROOT } from "./bundle.ts";

/** Linux architectures Deno is built for, as `uname -m` and `Deno.build.arch` name them. */
export type LinuxArch = "x86_64" | "aarch64";

/** The npm package holding Deno's executable for each architecture (glibc). */
export const DENO_NPM_PACKAGES: Readonly<Record<LinuxArch, string>> = Object.freeze({
  x86_64: "@deno/linux-x64-glibc",
  aarch64: "@deno/linux-arm64-glibc",
});

/** ELF `e_machine` values (EM_X86_64, EM_AARCH64). */
const ELF_MACHINES: Readonly<Record<number, LinuxArch>> = Object.freeze({
  62: "x86_64",
  183: "aarch64",
});

/**
 * The architecture of a 64-bit little-endian ELF executable from its first 20 bytes, or undefined
 * when `head` is not one (or is for another machine).
 */
export function elfArch(head: Uint8Array): LinuxArch | undefined {
  if (head.length < 20) return undefined;
  const magic = head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  // EI_CLASS 2 (64-bit), EI_DATA 1 (little endian); e_type 2 (EXEC) or 3 (DYN, PIE).
  if (!magic || head[4] !== 2 || head[5] !== 1) return undefined;
  const type = head[16]! | (head[17]! << 8);
  if (type !== 2 && type !== 3) return undefined;
  return ELF_MACHINES[head[18]! | (head[19]! << 8)];
}

/** Options of {@link denoForArch}. */
export interface DenoForArchOptions {
  /** The project root; the cache is its `.cache/deno-builds`. */
  root?: string;
  /** Progress lines (a fetch only). */
  log?: (line: string) => void;
}

/** Where {@link denoForArch} keeps the executable of `arch` at this Deno's version. */
export function denoBuildPath(arch: LinuxArch, root = PROJECT_ROOT): string {
  return `${root}/.cache/deno-builds/${Deno.version.deno}-${arch}/deno`;
}

/**
 * The path of a Deno executable for `arch` at this Deno's version: `Deno.execPath()` on a machine
 * of that architecture, else the npm build, fetched into {@link denoBuildPath} when it is not
 * there yet (written under a temporary name and renamed, so a concurrent fetch never sees half a
 * file). Needs `npm` and `tar` and the npm registry the first time.
 *
 * @throws InternalError when `npm pack` or `tar` fails, or the package is not the expected Deno
 *   (other version, or not an executable for `arch`).
 */
export async function denoForArch(
  arch: LinuxArch,
  opts: DenoForArchOptions = {},
): Promise<string> {
  if (arch === Deno.build.arch) return Deno.execPath();
  const path = denoBuildPath(arch, opts.root);
  if (await isExecutableFor(path, arch)) return path;
  const dir = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true });
  const spec = `${DENO_NPM_PACKAGES[arch]}@${Deno.version.deno}`;
  opts.log?.(`fetching ${spec} (npm pack) into ${dir}`);
  const tmp = await Deno.makeTempDir({ dir, prefix: ".fetch-" });
  try {
    const packed = await command("npm", [
      "pack",
      spec,
      "--pack-destination",
      tmp,
      // npm would take the project (its node_modules, Deno's) for an npm project otherwise.
      "--prefix",
      tmp,
      "--silent",
      "--no-fund",
      "--no-audit",
    ], tmp);
    const tgz = packed.trim().split("\n").at(-1)?.trim() ?? "";
    if (!/^[\w.-]+\.tgz$/.test(tgz)) {
      throw new InternalError(
        `"npm pack ${spec}" printed no tarball name (got "${packed.trim()}")`,
      );
    }
    await command("tar", [
      "-xzf",
      `${tmp}/${tgz}`,
      "-C",
      tmp,
      "package/deno",
      "package/package.json",
    ], tmp);
    const manifest = JSON.parse(await Deno.readTextFile(`${tmp}/package/package.json`)) as {
      version?: string;
    };
    if (manifest.version !== Deno.version.deno) {
      throw new InternalError(
        `"${spec}" holds version "${manifest.version}", not "${Deno.version.deno}"`,
      );
    }
    if (!(await isExecutableFor(`${tmp}/package/deno`, arch))) {
      throw new InternalError(`"${spec}" holds no ${arch} ELF executable at "package/deno"`);
    }
    await Deno.chmod(`${tmp}/package/deno`, 0o755);
    await Deno.rename(`${tmp}/package/deno`, path);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return path;
}

/** True when `path` is a file with the executable bit whose ELF header names `arch`. */
async function isExecutableFor(path: string, arch: LinuxArch): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return false;
  }
  try {
    const info = await file.stat();
    if (!info.isFile || ((info.mode ?? 0) & 0o111) === 0) return false;
    const head = new Uint8Array(20);
    let got = 0;
    while (got < head.length) {
      const n = await file.read(head.subarray(got));
      if (n === null) break;
      got += n;
    }
    return elfArch(head.subarray(0, got)) === arch;
  } finally {
    file.close();
  }
}

/** Runs `cmd` to completion in `cwd`; its stdout, or an InternalError with its output. */
async function command(cmd: string, args: string[], cwd: string): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
  } catch (err) {
    throw new InternalError(`Running "${cmd}" failed: ${errorMessage(err)}`);
  }
  const dec = new TextDecoder();
  if (!out.success) {
    const text = (dec.decode(out.stderr) + dec.decode(out.stdout)).trim();
    throw new InternalError(
      `Command "${cmd} ${args.join(" ")}" failed with code ${out.code}: ${
        text.split("\n").slice(-10).join("\n")
      }`,
    );
  }
  return dec.decode(out.stdout);
}
