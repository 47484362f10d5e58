/**
 * Turns a record key (a pod uid) into a file-name-safe string. Kubernetes uids
 * (`[0-9a-f-]`) pass through unchanged; any other character becomes `%XX` per
 * UTF-8 byte, so names never contain `/`, never start with `.` and never
 * collide for different keys.
 */
import { InvalidInputError } from "@aranya/common/errors";

const SAFE = /^[A-Za-z0-9_-]$/;
/** Longest encoded key, leaving room for prefixes and suffixes within 255 bytes. */
const MAX_ENCODED = 200;

/**
 * The file-name form of `key`.
 *
 * @throws InvalidInputError when `key` is empty or its encoded form exceeds 200 characters.
 */
export function encodeFileKey(key: string): string {
  if (key.length === 0) throw new InvalidInputError("Key must not be empty");
  let out = "";
  for (const ch of key) {
    if (SAFE.test(ch)) {
      out += ch;
    } else {
      for (const b of new TextEncoder().encode(ch)) {
        out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
      }
    }
  }
  if (out.length > MAX_ENCODED) {
    throw new InvalidInputError(
      `Key "${key.slice(0, 40)}…" is too long for a file name: ${out.length} characters encoded`,
    );
  }
  return out;
}
