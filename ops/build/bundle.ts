/**
 * A program bundled into one JavaScript file (`deno bundle`, npm packages included) beside a
 * `deno.json` that holds nothing but the program's permission set from the project's deno.json,
 * copied verbatim.
 *
 * The launcher runs this pair with `deno run --config deno.json -P=<program>`, and
 * `deno task compile:arhat` compiles the same pair with `deno compile --config deno.json
 * -P=<program>`: the device gets the same code with the same permissions either way, and the
 * binary embeds a 2.5 MB bundle instead of the project's node_modules (over 100 MB).
 *
 * @module
 */
import { InternalError } from "../../common/errors.ts";

/** The project root (holds deno.json). */
export const PROJECT_ROOT: string = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");

/** The programs that can be bundled: their folder holds main.ts, deno.json names their set. */
export type BundledProgram = "arhat" | "aranya";

/** A bundle's two files. */
export interface Bundle {
  /** `<outDir>/<program>.js` */
  script: string;
  /** `<outDir>/deno.json`, the permission set only. */
  config: string;
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

/**
 * Bundles `<program>/main.ts` and writes its permission set beside it. Rebuilding unchanged
 * sources gives the same bytes.
 *
 * @throws InternalError when `deno bundle` fails (the end of its output is in the message).
 */
export async function bundleProgram(o: BundleOptions): Promise<Bundle> {
  const root = o.root ?? PROJECT_ROOT;
  await Deno.mkdir(o.outDir, { recursive: true });
  const script = `${o.outDir}/${o.program}.js`;
  const out = await new Deno.Command("deno", {
    args: ["bundle", "--quiet", "--platform", "deno", "-o", script, `${o.program}/main.ts`],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (!out.success) {
    const tail = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-15).join("\n");
    throw new InternalError(`Bundling ${o.program} with "deno bundle" failed:\n${tail}`);
  }
  const config = `${o.outDir}/deno.json`;
  const set = await permissionSet(o.program, root);
  await Deno.writeTextFile(
    config,
    JSON.stringify({ permissions: { [o.program]: set } }, null, 2) + "\n",
  );
  return { script, config };
}
