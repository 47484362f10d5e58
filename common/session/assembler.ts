/**
 * Joins the chunks of one logical message (frames of one kind up to the one
 * with `complete`), with a size limit.
 */
import { ProtocolError } from "../errors.ts";
import { concatBytes } from "../bytes.ts";

/** Collects chunks until the message is complete. */
export class MessageAssembler {
  #parts: Uint8Array[] = [];
  #size = 0;
  #kind: number | undefined;

  constructor(readonly maxBytes: number) {}

  /** True while a message is partly received. */
  get inProgress(): boolean {
    return this.#kind !== undefined;
  }

  /**
   * Adds a chunk of message `kind`. Returns the whole payload when `complete`,
   * otherwise undefined. Throws ProtocolError when the kind changes mid-message
   * or the message grows past `maxBytes`.
   */
  push(kind: number, chunk: Uint8Array, complete: boolean): Uint8Array | undefined {
    if (this.#kind !== undefined && this.#kind !== kind) {
      throw new ProtocolError(
        `A message of kind ${this.#kind} was interrupted by a frame of kind ${kind}`,
      );
    }
    if (complete && this.#kind === undefined) return chunk; // the common single-frame case
    this.#kind = kind;
    this.#size += chunk.byteLength;
    if (this.#size > this.maxBytes) {
      throw new ProtocolError(`Message exceeds the limit of ${this.maxBytes} bytes`);
    }
    this.#parts.push(chunk);
    if (!complete) return undefined;
    const out = concatBytes(this.#parts);
    this.#parts = [];
    this.#size = 0;
    this.#kind = undefined;
    return out;
  }
}

/** Splits `payload` into chunks of at most `max` bytes (one empty chunk for an empty payload). */
export function chunk(payload: Uint8Array, max: number): Uint8Array[] {
  if (payload.byteLength <= max) return [payload];
  const out: Uint8Array[] = [];
  for (let off = 0; off < payload.byteLength; off += max) {
    out.push(payload.subarray(off, Math.min(off + max, payload.byteLength)));
  }
  return out;
}
