/** proto/gen must be exactly what `deno task proto` generates from proto/aranya. */
import assert from "node:assert/strict";
import { CACHE } from "@aranya/e2e/paths";
import { generate } from "./generate.ts";

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await listFiles(`${dir}/${e.name}`, `${prefix}${e.name}/`));
    else out.push(`${prefix}${e.name}`);
  }
  return out.sort();
}

Deno.test("proto/gen is up to date (run `deno task proto` if this fails)", async () => {
  const fresh = `${CACHE}/proto-check/${crypto.randomUUID()}`;
  try {
    await generate(fresh);
    const committed = new URL("./gen", import.meta.url).pathname;
    const want = await listFiles(fresh);
    assert.deepEqual(await listFiles(committed), want);
    for (const f of want) {
      assert.equal(
        await Deno.readTextFile(`${committed}/${f}`),
        await Deno.readTextFile(`${fresh}/${f}`),
        `proto/gen/${f} differs from a fresh generation`,
      );
    }
  } finally {
    await Deno.remove(fresh, { recursive: true }).catch(() => {});
  }
});
