/**
 * Node.js-side test helpers (e2e/node/: interop clients run under `node`).
 * They have their own package.json and package-lock.json; `npm ci` installs
 * them into e2e/node/node_modules, never into the Deno project's own
 * node_modules (npm would break Deno's layout there).
 */
import { exists, ROOT } from "./paths.ts";
import { run } from "./process.ts";

/** The folder holding the Node helpers and their package.json. */
export const NODE_HELPERS_DIR = `${ROOT}/e2e/node`;

interface LockFile {
  packages?: Record<string, { version?: string; optional?: boolean; link?: boolean }>;
}

/**
 * True when every package in e2e/node/package-lock.json is installed at the
 * locked version (a package's own package.json decides).
 */
export async function nodeHelpersInstalled(): Promise<boolean> {
  const lock: LockFile = JSON.parse(
    await Deno.readTextFile(`${NODE_HELPERS_DIR}/package-lock.json`),
  );
  for (const [path, entry] of Object.entries(lock.packages ?? {})) {
    if (!path.startsWith("node_modules/") || entry.link) continue;
    const manifest = `${NODE_HELPERS_DIR}/${path}/package.json`;
    if (!(await exists(manifest))) {
      if (entry.optional) continue;
      return false;
    }
    const installed = JSON.parse(await Deno.readTextFile(manifest)) as { version?: string };
    if (installed.version !== entry.version) return false;
  }
  return true;
}

/**
 * Installs the Node helpers' dependencies with `npm ci` when
 * e2e/node/node_modules is missing or differs from the lock file;
 * idempotent. Needs `node` and `npm` on PATH and the npm registry.
 */
export async function ensureNodeHelpers(log: (line: string) => void): Promise<void> {
  if (await nodeHelpersInstalled()) {
    log("node helpers: up to date");
    return;
  }
  log(`node helpers: npm ci in ${NODE_HELPERS_DIR}`);
  await run("npm", [
    "ci",
    "--prefix",
    NODE_HELPERS_DIR,
    "--ignore-scripts",
    "--no-audit",
    "--no-fund",
  ]);
  if (!(await nodeHelpersInstalled())) {
    throw new Error(
      `npm ci did not install the packages locked in "${NODE_HELPERS_DIR}/package-lock.json"`,
    );
  }
}
