/**
 * The Docker Engine API's multiplexed stream format (logs, exec and attach of
 * a container without a tty): frames of an 8-byte header
 * `[stream, 0, 0, 0, size u32 big-endian]` followed by `size` payload bytes,
 * where stream is 0 (stdin, reported as stdout), 1 (stdout), 2 (stderr) or
 * 3 (an error from the engine itself). With a tty the engine sends raw bytes.
 *
 * Pure: no I/O. {@link FrameDemuxer} parses incrementally and hands payload
 * bytes out as soon as they arrive, so a large frame is never buffered whole
 * and a frame split across any number of chunks costs nothing extra.
 */
import { InternalError, ProtocolError } from "@aranya/common/errors";
import type { OutputChunk } from "../runtime.ts";
import { concatBytes } from "@aranya/common/bytes";

const HEADER_SIZE = 8;
/** Stream byte of an engine-side error frame ("systemerr"). */
const SYSTEM_ERR = 3;
/** Longest engine error message kept from a systemerr frame. */
const MAX_SYSTEM_ERR = 64 * 1024;

/**
 * Incremental parser of the multiplexed stream.
 *
 * Contract: feed every chunk in order to {@link push}, then call
 * {@link finish} at the end of the input. Returned chunks never alias the
 * input (they are copies) and have non-empty data; empty frames produce
 * nothing. Throws `ProtocolError` on a malformed header or when the input ends
 * inside a frame, and `InternalError` carrying the engine's text for a
 * systemerr frame.
 */
export class FrameDemuxer {
  readonly #header = new Uint8Array(HEADER_SIZE);
  #headerFill = 0;
  /** Payload bytes still to come for the current frame. */
  #remaining = 0;
  #stream = 1;
  #systemErr: Uint8Array[] = [];
  #systemErrSize = 0;

  /** Parses `chunk`; returns the payload pieces it completed, in order. */
  push(chunk: Uint8Array): OutputChunk[] {
    const out: OutputChunk[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#remaining === 0) {
        const take = Math.min(HEADER_SIZE - this.#headerFill, chunk.length - pos);
        this.#header.set(chunk.subarray(pos, pos + take), this.#headerFill);
        this.#headerFill += take;
        pos += take;
        if (this.#headerFill < HEADER_SIZE) break;
        this.#headerFill = 0;
        this.#startFrame();
        continue;
      }
      const take = Math.min(this.#remaining, chunk.length - pos);
      const data = chunk.slice(pos, pos + take);
      pos += take;
      this.#remaining -= take;
      if (this.#stream === SYSTEM_ERR) {
        this.#collectSystemErr(data);
      } else {
        out.push({ stream: this.#stream === 2 ? "stderr" : "stdout", data });
      }
    }
    return out;
  }

  /** Checks that the input ended on a frame boundary. */
  finish(): void {
    if (this.#headerFill !== 0 || this.#remaining !== 0) {
      throw new ProtocolError(
        `Engine output stream ended inside a frame (${this.#headerFill} header bytes, ${this.#remaining} payload bytes missing)`,
      );
    }
  }

  #startFrame(): void {
    const h = this.#header;
    const stream = h[0]!;
    if (stream > SYSTEM_ERR || h[1] !== 0 || h[2] !== 0 || h[3] !== 0) {
      throw new ProtocolError(
        `Malformed frame header "${[...h].join(",")}" in the engine's multiplexed stream`,
      );
    }
    this.#stream = stream;
    this.#remaining = new DataView(h.buffer, h.byteOffset, HEADER_SIZE).getUint32(4);
    if (this.#remaining === 0) this.#endSystemErr();
  }

  #collectSystemErr(data: Uint8Array): void {
    if (this.#systemErrSize < MAX_SYSTEM_ERR) {
      this.#systemErr.push(data);
      this.#systemErrSize += data.length;
    }
    if (this.#remaining === 0) this.#endSystemErr();
  }

  #endSystemErr(): void {
    if (this.#stream !== SYSTEM_ERR) return;
    const text = new TextDecoder().decode(concatBytes(this.#systemErr)).trim();
    this.#systemErr = [];
    this.#systemErrSize = 0;
    throw new InternalError(`Engine reported an error in the output stream: "${text}"`);
  }
}

/** Encodes one frame (for tests and fakes). */
export function encodeFrame(stream: 0 | 1 | 2 | 3, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER_SIZE + payload.length);
  frame[0] = stream;
  new DataView(frame.buffer).setUint32(4, payload.length);
  frame.set(payload, HEADER_SIZE);
  return frame;
}

/** Options for {@link demuxStream}. */
export interface DemuxStreamOptions {
  /** The source is raw tty output: every byte is stdout, no frames. */
  tty: boolean;
  /** Called once when the output ends, errors (with the error) or is canceled. */
  onEnd?: (reason: "done" | "error" | "canceled", error?: unknown) => void;
}

/**
 * Turns the engine's byte stream into output chunks: demultiplexed, or as
 * stdout when `tty` is set.
 *
 * Contract: reads `source` only as fast as the result is read. Canceling
 * the result cancels `source`; an error of `source` or a malformed frame
 * errors the result.
 */
export function demuxStream(
  source: ReadableStream<Uint8Array>,
  opts: DemuxStreamOptions,
): ReadableStream<OutputChunk> {
  const reader = source.getReader();
  const demuxer = opts.tty ? undefined : new FrameDemuxer();
  let ended = false;
  const end = (reason: "done" | "error" | "canceled", error?: unknown) => {
    if (ended) return;
    ended = true;
    opts.onEnd?.(reason, error);
  };
  return new ReadableStream<OutputChunk>({
    async pull(controller) {
      try {
        while (true) {
          const { done, value } = await reader.read();
          if (done) {
            demuxer?.finish();
            controller.close();
            end("done");
            return;
          }
          if (value.length === 0) continue;
          const chunks = demuxer ? demuxer.push(value) : [{
            stream: "stdout" as const,
            data: value,
          }];
          if (chunks.length === 0) continue;
          for (const c of chunks) controller.enqueue(c);
          return;
        }
      } catch (err) {
        controller.error(err);
        end("error", err);
        await reader.cancel(err).catch(() => {});
      }
    },
    async cancel(reason) {
      end("canceled");
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}
