/** Test helper: a fresh state dir under `.cache/test-state/<random>`, removed by `cleanup`. */

const ROOT = new URL("../../../.cache/test-state", import.meta.url).pathname;

/** A state dir for one test. */
export interface TempStateDir {
  path: string;
  cleanup(): Promise<void>;
}

/** Creates an empty state dir for one test. */
export async function tempStateDir(): Promise<TempStateDir> {
  const path = `${ROOT}/${crypto.randomUUID()}`;
  await Deno.mkdir(path, { recursive: true });
  return { path, cleanup: () => Deno.remove(path, { recursive: true }) };
}

/** The names in `dir`, sorted. */
export async function listNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}
