/**
 * Quoting for POSIX sh: the one implementation for arhat's host exec and the
 * deploy tool's remote commands.
 *
 * @module
 */

/** Characters that need no quoting in sh (the empty string does). */
const SAFE = /^[A-Za-z0-9_\/.,:=@%+-]+$/;

/** Quotes one argument for /bin/sh: as it is when it is safe, else in single quotes. */
export function shellQuote(arg: string): string {
  return SAFE.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}
