/**
 * `SystemProbe`: how arhat measures its host, behind one seam so tests can
 * substitute it.
 *
 * Deno 2.9 refuses every read under `/proc` and `/sys` unless the process has
 * `--allow-all`, even with `--allow-read` for the exact path. arhat runs with a
 * scoped permission set, so the default probe reads such files directly when
 * it can and otherwise through `cat` in a subprocess (`--allow-run=cat`).
 * Memory comes from `Deno.systemMemoryInfo()` (`--allow-sys=systemMemoryInfo`),
 * so `/proc/meminfo` is never needed. Disk space comes from `node:fs`
 * `statfs` (`--allow-sys=statfs`): in-process and without parsing; `df -P -B1`
 * (`--allow-run=df`) is the fallback when `statfs` is not permitted.
 */
import { statfs } from "node:fs/promises";
import { NotSupportedError } from "../../common/errors.ts";
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

/** Options for {@link createSystemProbe}. */
export interface SystemProbeOptions {
  /** How `cat` and `df` are run (default {@link runCommand}). */
  run?: CommandRunner;
}

/** The probe of the machine arhat runs on; see the module doc. */
export function createSystemProbe(opts: SystemProbeOptions = {}): SystemProbe {
  const run = opts.run ?? runCommand;
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
      try {
        const s = await statfs(dir, { bigint: true });
        const unit = (s as { frsize?: bigint }).frsize || s.bsize;
        return { total: Number(s.blocks * unit), available: Number(s.bavail * unit) };
      } catch (err) {
        if (!(err instanceof Deno.errors.NotCapable)) throw err;
      }
      let out: CommandOutput;
      try {
        out = await run("df", ["-P", "-B1", dir]);
      } catch (err) {
        if (err instanceof Deno.errors.NotCapable) {
          throw new NotSupportedError(
            `Cannot measure the disk of "${dir}": neither statfs (--allow-sys=statfs) nor "df" (--allow-run=df) is allowed`,
            { cause: err },
          );
        }
        throw err;
      }
      const usage = out.code === 0 ? parseDfOutput(out.stdout) : undefined;
      if (!usage) {
        throw new NotSupportedError(
          `Cannot measure the disk of "${dir}": df exited with code ${out.code}: ${out.stderr.trim()}`,
        );
      }
      return usage;
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
