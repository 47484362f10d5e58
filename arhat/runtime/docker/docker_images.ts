/**
 * Image pulls on the Docker Engine API: reference checks, the pull query,
 * the X-Registry-Auth header and reading the progress stream (where Podman
 * reports a refused pull as an `error` line inside a 200).
 *
 * @module
 */
import { InvalidInputError } from "@aranya/common/errors";
import type { RegistryCredentials } from "../runtime.ts";
import { streamError } from "./engine_error.ts";

/** A reference the engines accept: no spaces or shell characters. */
const IMAGE_REF = /^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$/;

export function checkImageRef(ref: string): void {
  if (!IMAGE_REF.test(ref)) throw new InvalidInputError(`Image reference "${ref}" is invalid`);
}

/** fromImage and tag for a pull: a digest reference goes whole, otherwise the tag (default latest) apart. */
export function pullQuery(ref: string): URLSearchParams {
  if (ref.includes("@")) return new URLSearchParams({ fromImage: ref });
  const slash = ref.lastIndexOf("/");
  const colon = ref.lastIndexOf(":");
  if (colon > slash) {
    return new URLSearchParams({ fromImage: ref.slice(0, colon), tag: ref.slice(colon + 1) });
  }
  return new URLSearchParams({ fromImage: ref, tag: "latest" });
}

/** X-Registry-Auth: base64url of the engine's AuthConfig JSON. */
export function encodeAuth(c: RegistryCredentials): string {
  const json = JSON.stringify({
    username: c.username,
    password: c.password,
    identitytoken: c.identityToken,
    registrytoken: c.registryToken,
    serveraddress: c.server,
  });
  const bytes = new TextEncoder().encode(json);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_");
}

/**
 * Reads a JSON-lines progress stream to its end; an `error`/`errorDetail`
 * line rejects with the mapped domain error (the rest of the body is
 * canceled). A broken stream rejects with the transport's error.
 */
export async function readProgress(
  body: ReadableStream<Uint8Array> | null,
  what: string,
): Promise<void> {
  if (!body) return;
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let rest = "";
  const check = (line: string) => {
    if (!line.trim()) return;
    let obj: { error?: string; errorDetail?: { message?: string } };
    try {
      obj = JSON.parse(line);
    } catch {
      return; // progress lines only matter for their errors
    }
    if (obj.error || obj.errorDetail) {
      throw streamError(what, obj.errorDetail?.message || obj.error || "unknown error");
    }
  };
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += value;
      const lines = rest.split(/\r?\n/);
      rest = lines.pop() ?? "";
      lines.forEach(check);
    }
    check(rest);
  } catch (err) {
    await reader.cancel().catch(() => {});
    throw err;
  }
}
