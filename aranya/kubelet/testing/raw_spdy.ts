/**
 * A raw SPDY/3.1 peer for tests, shaped like Go's spdystream as the API
 * server uses it: SYN_STREAMs whose header block holds only Kubernetes'
 * headers, no WINDOW_UPDATE ever; frames read back as they are.
 */
import { Buffer } from "node:buffer";
import { constants as zlibConstants, createDeflate, deflateSync } from "node:zlib";

function headerBlock(headers: Record<string, string>): Uint8Array {
  const enc = new TextEncoder();
  const kv: number[] = [];
  const u32 = (n: number) => kv.push(n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255);
  u32(Object.keys(headers).length);
  for (const [k, v] of Object.entries(headers)) {
    for (const s of [k, v]) {
      const b = enc.encode(s);
      u32(b.length);
      kv.push(...b);
    }
  }
  return new Uint8Array(kv);
}

function synFrame(id: number, block: Uint8Array, fin: boolean): Uint8Array {
  const body = new Uint8Array(10 + block.length);
  body.set([id >>> 24, (id >>> 16) & 255, (id >>> 8) & 255, id & 255, 0, 0, 0, 0, 0, 0]);
  body.set(block, 10);
  const frame = new Uint8Array(8 + body.length);
  frame.set([0x80, 0x03, 0x00, 0x01, fin ? 1 : 0]); // control, version 3, SYN_STREAM
  frame[5] = (body.length >>> 16) & 255;
  frame[6] = (body.length >>> 8) & 255;
  frame[7] = body.length & 255;
  frame.set(body, 8);
  return frame;
}

/**
 * The first SYN_STREAM of a connection (stream `id`) whose header block holds
 * only `headers`, compressed without the SPDY dictionary (no FDICT bit, which
 * zlib readers accept).
 */
export function synStream(id: number, headers: Record<string, string>, fin = false): Uint8Array {
  const block = deflateSync(headerBlock(headers), { flush: zlibConstants.Z_SYNC_FLUSH });
  return synFrame(id, block, fin);
}

/** SYN_STREAMs of one connection: header blocks share one zlib stream, as SPDY requires. */
export class SynStreamWriter {
  readonly #deflate = createDeflate();
  readonly #out: Uint8Array[] = [];

  constructor() {
    this.#deflate.on("data", (c: Buffer) => this.#out.push(new Uint8Array(c)));
  }

  /** The next SYN_STREAM frame. */
  frame(id: number, headers: Record<string, string>, fin = false): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.#deflate.write(Buffer.from(headerBlock(headers)), (err) => {
        if (err) return reject(err);
        this.#deflate.flush(zlibConstants.Z_SYNC_FLUSH, () => {
          const block = Buffer.concat(this.#out.splice(0));
          resolve(synFrame(id, new Uint8Array(block), fin));
        });
      });
    });
  }

  close(): void {
    this.#deflate.close();
  }
}

/** A DATA frame on `stream`. */
export function dataFrame(stream: number, data: Uint8Array, fin = false): Uint8Array {
  const frame = new Uint8Array(8 + data.length);
  frame.set([(stream >>> 24) & 0x7f, (stream >>> 16) & 255, (stream >>> 8) & 255, stream & 255]);
  frame[4] = fin ? 1 : 0;
  frame[5] = (data.length >>> 16) & 255;
  frame[6] = (data.length >>> 8) & 255;
  frame[7] = data.length & 255;
  frame.set(data, 8);
  return frame;
}

/** A frame as read: control frames by type, data frames by stream. */
export type SpdyFrame =
  | { control: true; type: number; flags: number; body: Uint8Array }
  | { control: false; stream: number; flags: number; data: Uint8Array };

/** Splits complete frames off the front of `buf`; returns them and the rest. */
export function readFrames(buf: Uint8Array): { frames: SpdyFrame[]; rest: Uint8Array } {
  const frames: SpdyFrame[] = [];
  while (buf.length >= 8) {
    const len = (buf[5]! << 16) | (buf[6]! << 8) | buf[7]!;
    if (buf.length < 8 + len) break;
    const body = buf.slice(8, 8 + len);
    if (buf[0]! & 0x80) {
      frames.push({ control: true, type: (buf[2]! << 8) | buf[3]!, flags: buf[4]!, body });
    } else {
      const stream = ((buf[0]! & 0x7f) << 24) | (buf[1]! << 16) | (buf[2]! << 8) | buf[3]!;
      frames.push({ control: false, stream, flags: buf[4]!, data: body });
    }
    buf = buf.subarray(8 + len);
  }
  return { frames, rest: buf };
}
