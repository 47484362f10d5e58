/**
 * SHA-256 digests as lowercase hex. Through node:crypto rather than WebCrypto: its hash is
 * synchronous and takes data in pieces, so a file is hashed as it is read, never held whole.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** SHA-256 of `data` (a string is hashed as UTF-8). */
export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** SHA-256 of the file at `path`, read in chunks. */
export async function fileSha256Hex(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}
