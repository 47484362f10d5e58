/**
 * `deno task proto`: regenerates `proto/gen/` from `proto/aranya/*.proto` with
 * protoc (Debian protobuf-compiler) and protoc-gen-es (npm, pinned). Generated
 * code is never edited by hand; `generate_test.ts` fails when it is stale.
 */

const PROTO_DIR = new URL(".", import.meta.url).pathname.replace(/\/$/, "");

/** Generates TypeScript for every .proto into `outDir`. */
export async function generate(outDir: string): Promise<void> {
  const files: string[] = [];
  for await (const e of Deno.readDir(`${PROTO_DIR}/aranya`)) {
    if (e.name.endsWith(".proto")) files.push(`aranya/${e.name}`);
  }
  files.sort();
  await Deno.mkdir(outDir, { recursive: true });
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("protoc", {
      args: [
        `--plugin=protoc-gen-es=${PROTO_DIR}/protoc-gen-es`,
        `--es_out=${outDir}`,
        "--es_opt=target=ts,import_extension=ts",
        `--proto_path=${PROTO_DIR}`,
        ...files,
      ],
      cwd: PROTO_DIR,
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        'protoc is missing: install Debian\'s "protobuf-compiler" (deno task setup does)',
      );
    }
    throw err;
  }
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`protoc failed with code ${out.code}: ${text}`);
  }
}

if (import.meta.main) {
  const out = `${PROTO_DIR}/gen`;
  await Deno.remove(out, { recursive: true }).catch(() => {});
  await generate(out);
  console.error(`[proto] generated ${out}`);
}
