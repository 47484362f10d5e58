/**
 * What arhat's shipped bundle loads at start (its entry and the chunks it imports statically):
 * no transport library but through the configured transport's dynamic import, and none of the
 * Node built-ins that arhat defers because they bring Deno's Node compatibility layer into memory
 * (node:http/node:https for httpGet actions, node:fs for the statfs fallback).
 */
import assert from "node:assert/strict";
import { bundleProgram } from "./bundle.ts";
import { PROJECT_ROOT } from "./bundle.ts";

/** Files of the start graph: `entry` and every chunk reached through static imports. */
async function startGraph(dir: string, entry: string): Promise<Map<string, string>> {
  const seen = new Map<string, string>();
  const todo = [entry];
  while (todo.length) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    const text = await Deno.readTextFile(`${dir}/${name}`);
    seen.set(name, text);
    for (const m of text.matchAll(/^(?:import|export)\b[^;]*?from\s*"\.\/([^"]+)"/gm)) {
      todo.push(m[1]!);
    }
  }
  return seen;
}

Deno.test("arhat's start graph holds no deferred Node built-in and no transport library", async () => {
  const dir = await Deno.makeTempDir({ dir: `${PROJECT_ROOT}/.cache`, prefix: "start-graph-" });
  try {
    await bundleProgram({ program: "arhat", outDir: dir });
    const graph = await startGraph(dir, "arhat.js");
    assert.ok(graph.size >= 2, "the entry imports chunks");
    for (const [name, text] of graph) {
      for (const builtin of ["node:http", "node:https", "node:fs", "node:fs/promises"]) {
        assert.ok(
          !new RegExp(`from "${builtin}"|require\\("${builtin}"\\)`).test(text),
          `"${name}" of the start graph imports "${builtin}"`,
        );
      }
      for (const lib of ["mqtt@", "@grpc+grpc-js@"]) {
        assert.ok(!text.includes(`node_modules/.deno/${lib}`), `"${name}" holds "${lib}"`);
      }
    }
    // The deferred ones are still there, behind dynamic imports.
    const all = [...graph.values()].join("\n");
    assert.match(all, /import\("node:https?"\)/);
    assert.match(all, /import\("node:fs\/promises"\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
