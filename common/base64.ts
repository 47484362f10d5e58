/**
 * Base64 decoding for values from the Kubernetes API (Secret and ConfigMap
 * data, kubeconfig `*-data`, CSR certificates): the one path, strict. The
 * platform's `atob` refuses what is not base64, where `Buffer.from(s,
 * "base64")` silently skips bad characters and returns something else.
 *
 * @module
 */
import { InvalidInputError } from "./errors.ts";

/**
 * The bytes of standard base64 `s` (padding optional, whitespace ignored).
 *
 * @throws InvalidInputError naming `what` when `s` is not base64.
 */
export function decodeBase64(s: string, what = "The value"): Uint8Array {
  let bin: string;
  try {
    bin = atob(s.replace(/\s+/g, ""));
  } catch (err) {
    throw new InvalidInputError(`${what} is not base64`, { cause: err });
  }
  return Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
}

/** The UTF-8 text of standard base64 `s`; see {@link decodeBase64}. */
export function decodeBase64Text(s: string, what = "The value"): string {
  return new TextDecoder().decode(decodeBase64(s, what));
}
