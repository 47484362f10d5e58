/** Setting aside state files that cannot be read, so they are reported once and kept for inspection. */
import { errorMessage } from "@aranya/common/errors";
import type { Logger } from "@aranya/common/log";

/** Suffix of set-aside files; owners never read them again. */
export const CORRUPT_SUFFIX = ".corrupt";

/**
 * Logs a corrupt state file as a warning and renames it to `<path>.corrupt` (replacing an older
 * one). Never throws: a failed rename is logged too.
 */
export async function quarantine(path: string, err: unknown, log: Logger): Promise<void> {
  log.warn("skipping corrupt state file", { path, error: errorMessage(err) });
  try {
    await Deno.rename(path, `${path}${CORRUPT_SUFFIX}`);
  } catch (renameErr) {
    log.warn("cannot set corrupt state file aside", { path, error: errorMessage(renameErr) });
  }
}
