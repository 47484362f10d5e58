/**
 * Where the test environment keeps its files.
 *
 * Everything lives under the checkout's `.cache/` (ignored by git), except the
 * Unix sockets: Deno's `--allow-net=unix:` entries must be absolute, so the
 * sockets sit at fixed paths under {@link SOCKET_DIR}, which deno.json names.
 */

/** The repository root (the folder holding the root deno.json). */
export const ROOT: string = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** Cache root: built binaries, service state and logs. Never committed. */
export const CACHE: string = `${ROOT}/.cache`;

/** Fixed folder for the services' Unix sockets (see deno.json "permissions.e2e.net"). */
export const SOCKET_DIR = "/tmp/aranya-e2e";

/** Folder of one service's state, under the cache. */
export function stateDir(service: string): string {
  return `${CACHE}/${service}`;
}

/** Creates a folder (and its parents) if missing; returns it. */
export async function ensureDir(path: string): Promise<string> {
  await Deno.mkdir(path, { recursive: true });
  return path;
}

/** Removes a path recursively; a missing path is not an error. */
export async function removeAll(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** True when the path exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
