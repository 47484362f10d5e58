/**
 * Crash-safe file replacement for arhat's state: a file is either its old
 * content or its new content after a power cut, never a mix.
 *
 * `writeFileAtomic` writes a temp file in the target's directory, fsyncs it,
 * renames it over the target and fsyncs the directory so the rename itself is
 * durable. An interrupted write leaves only a temp file named
 * `.<name>.tmp-<hex>`, which readers ignore ({@link isTempFileName}) and
 * owners remove on start.
 */

/** Options for {@link writeFileAtomic}. */
export interface AtomicWriteOptions {
  /** File mode of the new file (default 0o600: state may hold secrets). */
  mode?: number;
}

const TEMP_NAME = /^\..+\.tmp-[0-9a-f]{16}$/;

/** True for the names of temp files left by an interrupted {@link writeFileAtomic}. */
export function isTempFileName(name: string): boolean {
  return TEMP_NAME.test(name);
}

/**
 * Replaces `path` with `data` atomically and durably. The directory must exist.
 * On failure the target is untouched and the temp file is removed.
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const { dir, base } = splitPath(path);
  const random = crypto.getRandomValues(new Uint8Array(8));
  const tmp = `${dir}/.${base}.tmp-${
    Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: opts.mode ?? 0o600 });
  try {
    try {
      let written = 0;
      while (written < data.length) written += await file.write(data.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dir);
}

/**
 * Removes `path` durably (the directory is fsynced afterwards).
 *
 * @returns false when there was nothing to remove.
 */
export async function removeFileDurable(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
  await syncDir(splitPath(path).dir);
  return true;
}

/**
 * Fsyncs a directory so renames and removals in it survive a power cut. Best effort: platforms
 * that cannot open a directory (Windows) skip it.
 */
export async function syncDir(dir: string): Promise<void> {
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(dir, { read: true });
  } catch {
    return;
  }
  try {
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on directories; the rename still happened.
  } finally {
    handle.close();
  }
}

function splitPath(path: string): { dir: string; base: string } {
  const slash = path.lastIndexOf("/");
  return slash < 0
    ? { dir: ".", base: path }
    : { dir: slash === 0 ? "/" : path.slice(0, slash), base: path.slice(slash + 1) };
}
