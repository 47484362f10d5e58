/**
 * `SystemProbe`: how arhat measures its host, behind one seam so tests can
 * substitute it.
 *
 * Deno 2.9 refuses every read under `/proc` and `/sys` unless the process has
 * `--allow-all`, even with `--allow-read` for the exact path. arhat runs with a
 * scoped permission set, so the default probe reads such files directly when
 * it can and otherwise through `cat` in a subprocess (`--allow-run=cat`).
 * Memory comes from `Deno.systemMemoryInfo()` (`--allow-sys=systemMemoryInfo`),
 * so `/proc/meminfo` is never needed. Disk space comes from `df -P -B1`
 * (`--allow-run=df`); `node:fs` `statfs` (`--allow-sys=statfs`) is the
 * fallback when df cannot run or answer (a busybox df without `-B`). df comes
 * first because `node:fs` loads Deno's Node compatibility layer, about 2 MB of
 * arhat's memory for its life, for one number every 30 s.
 */
import { NotSupportedError } from "@aranya/common/errors";
import { type DiskUsage, parseDfOutput } from "./host_parsers.ts";

/** What a finished subprocess printed. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd args…` to completion; rejects when it cannot be started. */
export type CommandRunner = (cmd: string, args: string[]) => Promise<CommandOutput>;

/** Total and available memory, bytes. */
export interface MemoryUsage {
  total: number;
  /** What the kernel estimates can be allocated without swapping (`MemAvailable`). */
  available: number;
}

/** Reads facts about the host. */
export interface SystemProbe {
  /**
   * Text of a host file (for example under `/proc`), or undefined when it does not exist or
   * cannot be read (for example root-only `/sys` files).
   *
   * @throws NotSupportedError when arhat's permissions allow neither reading it nor running `cat`.
   */
  readFile(path: string): Promise<string | undefined>;
  /**
   * Size and free space of the file system holding `dir`.
   *
   * @throws NotSupportedError when neither `statfs` nor `df` is permitted; other errors when
   *   `dir` does not exist.
   */
  diskUsage(dir: string): Promise<DiskUsage>;
  /** @throws NotSupportedError without `--allow-sys=systemMemoryInfo`. */
  memory(): MemoryUsage;
  /** Logical CPUs this process may use. */
  cpuCount(): number;
}

/** Runs a command with `LC_ALL=C` (stable number formats), stdin closed. */
export async function runCommand(cmd: string, args: string[]): Promise<CommandOutput> {
  const out = await new Deno.Command(cmd, {
    args,
    env: { LC_ALL: "C" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** `statfs(2)` of the file system holding `dir`, in blocks of `unit` bytes. */
export type StatFs = (dir: string) => Promise<{ blocks: bigint; bavail: bigint; unit: bigint }>;

/** node:fs's statfs, imported on first use (see the module doc). */
export async function nodeStatFs(dir: string): ReturnType<StatFs> {
  const { statfs } = await import("node:fs/promises");
  const s = await statfs(dir, { bigint: true });
  return { blocks: s.blocks, bavail: s.bavail, unit: (s as { frsize?: bigint }).frsize || s.bsize };
}

/** Options for {@link createSystemProbe}. */
export interface SystemProbeOptions {
  /** How `cat` and `df` are run (default {@link runCommand}). */
  run?: CommandRunner;
  /** The fallback for disk space (default {@link nodeStatFs}). */
  statfs?: StatFs;
}

/** The probe of the machine arhat runs on; see the module doc. */
export function createSystemProbe(opts: SystemProbeOptions = {}): SystemProbe {
  const run = opts.run ?? runCommand;
  const statfs = opts.statfs ?? nodeStatFs;
  return {
    async readFile(path) {
      try {
        return await Deno.readTextFile(path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotCapable)) return undefined;
      }
      let out: CommandOutput;
      try {
        out = await run("cat", [path]);
      } catch (err) {
        if (err instanceof Deno.errors.NotCapable) {
          throw new NotSupportedError(
            `Cannot read "${path}": Deno reads it only with --allow-all, and running "cat" is not allowed (--allow-run=cat)`,
            { cause: err },
          );
        }
        throw err;
      }
      return out.code === 0 ? out.stdout : undefined;
    },

    async diskUsage(dir) {
      let why: string;
      try {
        const out = await run("df", ["-P", "-B1", dir]);
        const usage = out.code === 0 ? parseDfOutput(out.stdout) : undefined;
        if (usage) return usage;
        why = `df exited with code ${out.code}: ${out.stderr.trim() || out.stdout.trim()}`;
      } catch (err) {
        if (!(err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.NotFound)) {
          throw err;
        }
        why = `"df" cannot run (--allow-run=df, and df on the PATH)`;
      }
      try {
        const s = await statfs(dir);
        return { total: Number(s.blocks * s.unit), available: Number(s.bavail * s.unit) };
      } catch (err) {
        if (!(err instanceof Deno.errors.NotCapable)) throw err;
        throw new NotSupportedError(
          `Cannot measure the disk of "${dir}": ${why}, and statfs is not allowed (--allow-sys=statfs)`,
          { cause: err },
        );
      }
    },

    memory() {
      try {
        const m = Deno.systemMemoryInfo();
        return { total: m.total, available: m.available };
      } catch (err) {
        throw new NotSupportedError(
          "Cannot read memory usage: --allow-sys=systemMemoryInfo is not granted",
          { cause: err },
        );
      }
    },

    cpuCount() {
      return navigator.hardwareConcurrency;
    },
  };
}
