/**
 * Compiles arhat or aranya into self-contained binaries with `deno compile`:
 *
 * ```sh
 * deno run -P=ops ops/build/compile.ts <arhat|aranya> [--target T]... [--out-dir dist]
 * ```
 *
 * One binary per target, `<out-dir>/<program>-<target>`, each with the program's permission set
 * from deno.json baked in (`-P=<program>`): the same set `deno task arhat|aranya` and the tests
 * use, so there is one set per program. Default targets: x86_64 and aarch64 Linux. Relative paths
 * are relative to the project root (where deno.json is).
 *
 * arhat is compiled from its bundle (bundle.ts: one JavaScript file with its npm packages, beside
 * a deno.json holding only its permission set, compiled with `--config` that file): the binary
 * embeds 2.5 MB of code instead of the project's node_modules, which matters on a device's flash,
 * and it is the very pair the deploy launcher runs with `deno run` (tested end to end). aranya,
 * which runs in a container image, is compiled from its sources.
 *
 * `deno compile` downloads the `denort` runtime of each target once into DENO_DIR. Offline that
 * fails; the CLI then explains the way out (compile once with network, or DENORT_BIN with one
 * target) in one message instead of deno's error chain. `DENORT_BIN` is read by deno itself; this
 * module only checks that it names a file and that only one target was asked for. Known npm files
 * that crash deno compile 2.9 are left out of the binary ({@link crashingNpmFiles}).
 *
 * Uses only Deno APIs and `node:util`, so `deno run` of this file needs no npm package (it works
 * with an empty DENO_DIR).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Bundle, bundleProgram, PROJECT_ROOT, v8FlagsArgs } from "./bundle.ts";

export { PROJECT_ROOT };

/** The programs this repository builds. */
export const PROGRAMS = ["arhat", "aranya"] as const;
/** A program name: also its folder (`<program>/main.ts`) and its permission set in deno.json. */
export type Program = typeof PROGRAMS[number];

/** The targets both programs are built for (Linux with glibc). */
export const TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] as const;
/** A Deno target triple. */
export type Target = typeof TARGETS[number];

/** The output folder when none is given, relative to the project root. */
export const DEFAULT_OUT_DIR = "dist";

/** A failure to compile, with a message meant for the user as it is (no stack trace needed). */
export class CompileError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CompileError";
  }
}

/** What {@link compileArgs} builds a command line for. */
export interface CompileArgsOptions {
  program: Program;
  target: Target;
  /** Output folder, absolute or relative to the project root. Default: {@link DEFAULT_OUT_DIR}. */
  outDir?: string;
  /** Paths (relative to the project root) left out of the embedded files: `--exclude` each. */
  exclude?: readonly string[];
  /** Compile this bundle (with its own permission config) instead of `<program>/main.ts`. */
  bundle?: Bundle;
}

/** The programs compiled from their bundle (see the module doc). */
export const BUNDLED: readonly Program[] = ["arhat"];

/** Path of the binary for `program` and `target` in `outDir`: `<outDir>/<program>-<target>`. */
export function artifactPath(outDir: string, program: Program, target: Target): string {
  return `${outDir.replace(/\/+$/, "")}/${program}-${target}`;
}

/**
 * The arguments of `deno` (without "deno" itself) that compile `program` for `target`, to run
 * with the project root as working directory. Pure: it checks nothing.
 */
export function compileArgs(o: CompileArgsOptions): string[] {
  return [
    "compile",
    "--no-prompt",
    ...(o.bundle
      ? ["--no-lock", "--config", o.bundle.config, ...o.bundle.runFlags]
      : v8FlagsArgs(o.program)),
    `-P=${o.program}`,
    "--target",
    o.target,
    ...(o.exclude ?? []).flatMap((path) => ["--exclude", path]),
    "-o",
    artifactPath(o.outDir ?? DEFAULT_OUT_DIR, o.program, o.target),
    o.bundle?.script ?? `${o.program}/main.ts`,
  ];
}

/**
 * Files in node_modules that make `deno compile` 2.9 crash with "thread 'tokio-runtime-worker'
 * has overflowed its stack" (denoland/deno#36746): deno parses the embedded files, and bintrees
 * (through prom-client and tdigest) ships test data without a file extension, 100,000 lines of
 * numbers that parse as one deeply nested expression. Test data is never loaded at run time, so
 * leaving it out changes nothing for the program. Returns the paths that exist under `root`,
 * relative to it.
 */
export async function crashingNpmFiles(root: string): Promise<string[]> {
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(`${root}/node_modules/.deno`)) {
      if (!e.isDirectory || !e.name.startsWith("bintrees@")) continue;
      const test = `node_modules/.deno/${e.name}/node_modules/bintrees/test`;
      if (await isDirectory(`${root}/${test}`)) found.push(test);
    }
  } catch (err) {
    // No node_modules folder: deno compile then reads npm packages from DENO_DIR.
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return found.sort();
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The message for a `deno compile` that could not download the denort runtime of `target`,
 * naming both ways out: compiling once with network, or DENORT_BIN with that one target.
 */
export function denortDownloadMessage(
  program: Program,
  target: Target,
  denoVersion: string = Deno.version.deno,
): string {
  return `Cannot compile "${program}" for "${target}": deno compile needs the denort runtime for ` +
    `that target and could not download it (offline?). On a machine with network run ` +
    `"deno task compile:${program}" once (it caches denort in DENO_DIR), or download ` +
    `denort-${target}.zip for Deno ${denoVersion}, unzip it and run again with ` +
    `DENORT_BIN=/path/to/denort --target ${target}.`;
}

/** Removes ANSI colour sequences. */
function plain(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/**
 * True when `stderr` of `deno compile` says that downloading the denort runtime failed for a
 * network reason (no DNS, refused or timed-out connection, proxy errors), as opposed to a type
 * error or a write failure.
 */
export function isDenortDownloadFailure(stderr: string): boolean {
  const text = plain(stderr);
  if (!/denort-[\w-]+\.zip/.test(text)) return false;
  return NETWORK_ERRORS.some((re) => re.test(text));
}

/** How deno's HTTP client words a failed download. */
const NETWORK_ERRORS = [
  /error sending request/i,
  /dns error/i,
  /failed to lookup address/i,
  /connect error/i,
  /client error \(Connect\)/i,
  /connection refused/i,
  /timed out/i,
  /proxy/i,
];

/**
 * The part of deno's stderr worth showing: colours removed, the "Stack backtrace" section and
 * the experimental-feature warning dropped, at most `lines` lines from the end.
 */
export function stderrTail(stderr: string, lines = 20): string {
  const text = plain(stderr).split(/\r?\n\s*Stack backtrace:/)[0] ?? "";
  const kept = text.split(/\r?\n/).filter((l) =>
    l.trim() !== "" && !/^Warning Permissions in the config file is an experimental/.test(l)
  );
  return kept.slice(-lines).join("\n");
}

/** Options of {@link compileProgram}. */
export interface CompileOptions {
  program: Program;
  /** Default: every target in {@link TARGETS}. */
  targets?: readonly Target[];
  /** Output folder, absolute or relative to `root`. Default: {@link DEFAULT_OUT_DIR}. */
  outDir?: string;
  /**
   * The denort binary deno compile uses instead of downloading one (one target only). Default:
   * the DENORT_BIN environment variable; unset or empty: deno downloads (or reuses its cached)
   * denort.
   */
  denortBin?: string;
  /** The project root, the working directory of deno compile. Default: {@link PROJECT_ROOT}. */
  root?: string;
  /** The deno executable. Default: "deno" (what the "ops" permission set allows to run). */
  deno?: string;
  /** Where progress and each artifact (path, size) go, a line each. Default: console.log. */
  log?: (line: string) => void;
}

/** One compiled binary. */
export interface CompiledArtifact {
  target: Target;
  /** As passed to deno compile (relative to the root unless the out dir was absolute). */
  path: string;
  bytes: number;
}

function absolute(root: string, path: string): string {
  return path.startsWith("/") ? path : `${root}/${path}`;
}

/** Throws when `denortBin` does not name a file or when it is combined with several targets. */
async function checkDenortBin(denortBin: string, targets: readonly Target[]): Promise<void> {
  let isFile = false;
  try {
    isFile = (await Deno.stat(denortBin)).isFile;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  if (!isFile) {
    throw new CompileError(
      `DENORT_BIN names "${denortBin}", which is not a file: point it at the denort binary ` +
        `unzipped from denort-<target>.zip for Deno ${Deno.version.deno}, or unset it to let ` +
        `deno compile download denort.`,
    );
  }
  if (targets.length !== 1) {
    throw new CompileError(
      `DENORT_BIN ("${denortBin}") is the denort runtime of one target, but ${targets.length} ` +
        `targets were asked for (${targets.map((t) => `"${t}"`).join(", ")}): pass ` +
        `--target with the one target that denort was built for.`,
    );
  }
}

/** What deno prints when one of its threads overflowed its stack. */
const STACK_OVERFLOW = /has overflowed its stack/;

/**
 * Runs deno in `root` with colours off; stderr decoded. DENORT_BIN is passed when given and
 * removed otherwise (deno takes an empty DENORT_BIN for a path).
 */
async function runDeno(
  deno: string,
  o: { args: string[]; root: string; denortBin: string },
): Promise<{ success: boolean; code: number; stderr: string }> {
  const env = Deno.env.toObject();
  delete env.DENORT_BIN;
  if (o.denortBin) env.DENORT_BIN = o.denortBin;
  env.NO_COLOR = "1";
  const out = await new Deno.Command(deno, {
    args: o.args,
    cwd: o.root,
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { success: out.success, code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

/** Best effort: removes the temporary files an aborted deno compile may leave beside `out`. */
async function removeLeftovers(out: string): Promise<void> {
  const slash = out.lastIndexOf("/");
  const dir = out.slice(0, slash) || "/";
  const prefix = `${out.slice(slash + 1)}.tmp-`;
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.startsWith(prefix)) await Deno.remove(`${dir}/${e.name}`).catch(() => {});
    }
  } catch {
    // The folder may not exist, or may be outside what this process may write: nothing to do.
  }
}

/**
 * Compiles `program` for each target in turn, with the project root as working directory, and
 * reports each artifact (path, size) through `log`.
 *
 * @returns the artifacts, in target order.
 * @throws CompileError when DENORT_BIN names no file or is combined with several targets, when
 *   denort could not be downloaded (see {@link denortDownloadMessage}), or when deno compile
 *   failed otherwise (with the tail of deno's stderr). Targets after a failed one are not built.
 */
export async function compileProgram(o: CompileOptions): Promise<CompiledArtifact[]> {
  const targets = o.targets?.length ? [...new Set(o.targets)] : [...TARGETS];
  const root = o.root ?? PROJECT_ROOT;
  const outDir = o.outDir ?? DEFAULT_OUT_DIR;
  const log = o.log ?? ((line: string) => console.log(line));
  const denortBin = o.denortBin ?? Deno.env.get("DENORT_BIN") ?? "";
  if (denortBin) await checkDenortBin(absolute(root, denortBin), targets);

  let exclude = await crashingNpmFiles(root);
  const bundle = BUNDLED.includes(o.program)
    ? await bundleProgram({
      program: o.program,
      outDir: `${absolute(root, outDir)}/${o.program}-bundle`,
      root,
    })
    : undefined;
  const artifacts: CompiledArtifact[] = [];
  for (const target of targets) {
    const path = artifactPath(outDir, o.program, target);
    log(`Compiling "${o.program}" for "${target}" ...`);
    const run = (leftOut: string[]) =>
      runDeno(o.deno ?? "deno", {
        args: compileArgs({
          program: o.program,
          target,
          outDir,
          ...(bundle ? { bundle } : { exclude: leftOut }),
        }),
        root,
        denortBin: denortBin && absolute(root, denortBin),
      }).catch((err) => {
        throw new CompileError(
          `Cannot compile "${o.program}" for "${target}": running "${o.deno ?? "deno"}" ` +
            `failed: ${err instanceof Error ? err.message : String(err)}`,
          { cause: err },
        );
      });
    let out = await run(exclude);
    if (!out.success && STACK_OVERFLOW.test(out.stderr)) {
      // A first compile creates node_modules itself, after the files to leave out were looked for.
      const again = await crashingNpmFiles(root);
      if (again.join("\n") !== exclude.join("\n")) out = await run(exclude = again);
    }
    if (!out.success) {
      await removeLeftovers(absolute(root, path));
      if (!denortBin && isDenortDownloadFailure(out.stderr)) {
        throw new CompileError(denortDownloadMessage(o.program, target));
      }
      const hint = STACK_OVERFLOW.test(out.stderr)
        ? "\n(deno compile 2.9 overflows its stack on some embedded npm files, " +
          "denoland/deno#36746; ops/build/compile.ts leaves out the known ones in " +
          "crashingNpmFiles: find the new one and add it there.)"
        : "";
      throw new CompileError(
        `Cannot compile "${o.program}" for "${target}": deno compile failed with exit code ` +
          `${out.code}:\n${stderrTail(out.stderr)}${hint}`,
      );
    }
    const bytes = (await Deno.stat(absolute(root, path))).size;
    log(`${path}  ${(bytes / 1024 / 1024).toFixed(1)} MB`);
    artifacts.push({ target, path, bytes });
  }
  return artifacts;
}

/** The CLI's usage text. */
export const USAGE = "Usage: compile.ts <arhat|aranya> [--target T]... [--out-dir dist]\n" +
  `Targets: ${TARGETS.join(", ")} (default: all). Honours DENORT_BIN (with one --target).`;

/** Parses the CLI's arguments into {@link CompileOptions}; throws CompileError on bad input. */
export function parseCompileArgs(args: string[]): CompileOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        target: { type: "string", multiple: true },
        "out-dir": { type: "string" },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new CompileError(`${err instanceof Error ? err.message : String(err)}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  const [program, ...rest] = positionals;
  if (!program || !(PROGRAMS as readonly string[]).includes(program) || rest.length) {
    const got = positionals.length ? positionals.map((p) => `"${p}"`).join(" ") : "nothing";
    throw new CompileError(`Expected one program, "arhat" or "aranya", got ${got}.\n${USAGE}`);
  }
  const targets = (values.target ?? []).map((t) => {
    if (!(TARGETS as readonly string[]).includes(t)) {
      throw new CompileError(
        `Unknown target "${t}": expected one of ${TARGETS.map((x) => `"${x}"`).join(", ")}.`,
      );
    }
    return t as Target;
  });
  return {
    program: program as Program,
    ...(targets.length ? { targets } : {}),
    ...(values["out-dir"] ? { outDir: values["out-dir"] } : {}),
  };
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(USAGE);
    Deno.exit(0);
  }
  try {
    await compileProgram(parseCompileArgs(Deno.args));
  } catch (err) {
    if (!(err instanceof CompileError)) throw err;
    console.error(err.message);
    Deno.exit(1);
  }
}
