/**
 * A program bundled into JavaScript (`deno bundle`, npm packages included) beside a `deno.json`
 * that holds nothing but the program's permission set from the project's deno.json, copied
 * verbatim.
 *
 * The launcher runs this pair with `deno run --config deno.json -P=<program> <V8 flags>`, and
 * `deno task compile:arhat` compiles the same pair with `deno compile --config deno.json
 * -P=<program> <V8 flags>`: the device gets the same code with the same permissions either way,
 * and the binary embeds a 2.5 MB bundle instead of the project's node_modules (over 100 MB).
 *
 * The bundle is code-split: `<program>.js` holds what runs at start, and every dynamic import
 * (arhat's transports, the gRPC probe's library) is a chunk file beside it, loaded when first
 * used, so a device keeps only the transport it dials in memory (about 7 MB less on websocket
 * than one file holding them all). The files are ASCII only (other characters escaped): V8 keeps
 * a source with any other character as UTF-16, twice its size, for the process's life.
 *
 * @module
 */
import { InternalError } from "@aranya/common/errors";

/** The project root (holds deno.json). */
export const PROJECT_ROOT: string = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** The programs that can be bundled: their folder holds main.ts, deno.json names their set. */
export type BundledProgram = "arhat" | "aranya";

/**
 * The V8 flags each bundled program runs with: the launcher's `deno run`, `deno compile` (baked
 * into the binary) and the benches that run the bundle all take them from here. Chosen by
 * measurement (docs/arhat.md, "Footprint"): arhat's young generation is capped at 1 MB
 * (`--max-semi-space-size=1`; V8's default grows it to 16 MB per semi-space, which an idle agent
 * fills with garbage before it collects), and `--lite-mode` (no optimizing compilers, lazy
 * feedback) saves their code and metadata; arhat's hot paths are I/O bound. aranya (compiled
 * from its sources, not bundled) runs with `--optimize-for-size`: V8 collects its heap sooner
 * instead of growing it, which bench:scale measured as less than half the peak RSS with 250
 * devices (330 -> 174 MB) for about 40 % more CPU (docs/scale.md); `--lite-mode` would cost
 * aranya's request-heavy paths their optimizing compiler.
 */
export const V8_FLAGS: Readonly<Record<BundledProgram, readonly string[]>> = Object.freeze({
  arhat: Object.freeze(["--max-semi-space-size=1", "--lite-mode"]),
  aranya: Object.freeze(["--optimize-for-size"]),
});

/** The `deno run` / `deno compile` argument that applies {@link V8_FLAGS} of `program`, if any. */
export function v8FlagsArgs(program: BundledProgram): string[] {
  const flags = V8_FLAGS[program];
  return flags.length ? [`--v8-flags=${flags.join(",")}`] : [];
}

/** A bundle's files. */
export interface Bundle {
  /** `<outDir>/<program>.js`, the entry. */
  script: string;
  /** The chunk files it imports (absolute, in `outDir`, sorted): they ship beside the script. */
  chunks: string[];
  /** `<outDir>/deno.json`, the permission set only. */
  config: string;
  /** The deno flags it runs with beside `--config` and `-P` ({@link v8FlagsArgs}). */
  runFlags: string[];
}

/** The permission set `name` of the project's deno.json, as written there. */
export async function permissionSet(
  name: BundledProgram,
  root = PROJECT_ROOT,
): Promise<Record<string, unknown>> {
  const config = JSON.parse(await Deno.readTextFile(`${root}/deno.json`)) as {
    permissions?: Record<string, Record<string, unknown>>;
  };
  const set = config.permissions?.[name];
  if (!set) throw new InternalError(`"${root}/deno.json" has no "permissions.${name}" set`);
  return set;
}

/** Options of {@link bundleProgram}. */
export interface BundleOptions {
  program: BundledProgram;
  /** Output folder (absolute; created). */
  outDir: string;
  root?: string;
}

/** Names deno bundle gives chunks: `<name>-<8 character hash>.js`. */
const CHUNK_NAME = /^[\w.-]+-[A-Z0-9]{8}\.js$/;

/**
 * `source` with every character outside ASCII written as a `\uXXXX` escape (astral ones as their
 * surrogate pair), which means the same in strings, templates, regular expressions and comments.
 */
export function asciiOnly(source: string): string {
  return source.replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * Bundles `<program>/main.ts` (code-split, ASCII only: see the module doc) and writes its
 * permission set beside it; chunks of an earlier bundle in `outDir` are removed. Rebuilding
 * unchanged sources gives the same bytes.
 *
 * @throws InternalError when `deno bundle` fails (the end of its output is in the message).
 */
export async function bundleProgram(o: BundleOptions): Promise<Bundle> {
  const root = o.root ?? PROJECT_ROOT;
  await Deno.mkdir(o.outDir, { recursive: true });
  const script = `${o.outDir}/${o.program}.js`;
  const tmp = await Deno.makeTempDir({ dir: o.outDir, prefix: ".bundle-" });
  const chunks: string[] = [];
  try {
    const out = await new Deno.Command("deno", {
      args: [
        "bundle",
        "--quiet",
        "--platform",
        "deno",
        "--code-splitting",
        "--outdir",
        tmp,
        `${o.program}/main.ts`,
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      const tail = text.trim().split("\n").slice(-15).join("\n");
      throw new InternalError(`Bundling ${o.program} with "deno bundle" failed:\n${tail}`);
    }
    const names: string[] = [];
    for await (const e of Deno.readDir(tmp)) names.push(e.name);
    for (const name of names) {
      const isEntry = name === "main.js";
      if (!isEntry && !CHUNK_NAME.test(name)) {
        throw new InternalError(`"deno bundle" wrote an unexpected file "${name}"`);
      }
      // Renamed into place, so a build running beside this one never reads half a file.
      await Deno.writeTextFile(
        `${tmp}/${name}`,
        asciiOnly(await Deno.readTextFile(`${tmp}/${name}`)),
      );
      const to = isEntry ? script : `${o.outDir}/${name}`;
      await Deno.rename(`${tmp}/${name}`, to);
      if (!isEntry) chunks.push(to);
    }
    // Chunks of an earlier bundle (other names: their content changed) are not shipped again.
    for await (const e of Deno.readDir(o.outDir)) {
      if (!e.isFile || !CHUNK_NAME.test(e.name) || names.includes(e.name)) continue;
      await Deno.remove(`${o.outDir}/${e.name}`).catch((err) => {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      });
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  const config = `${o.outDir}/deno.json`;
  const set = await permissionSet(o.program, root);
  await Deno.writeTextFile(
    config,
    JSON.stringify({ permissions: { [o.program]: set } }, null, 2) + "\n",
  );
  return { script, chunks: chunks.sort(), config, runFlags: v8FlagsArgs(o.program) };
}
