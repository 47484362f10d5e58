/**
 * A raw HTTP/2 client for tests: writes frames byte by byte and records every
 * frame the server sends, so tests can assert on the wire (trailer order, no
 * GOAWAY, RST codes) and misbehave on purpose (partial frames, RST, GOAWAY).
 * Plain TCP (h2c) or TLS with ALPN "h2". Request headers are HPACK literals
 * without indexing; response headers are decoded with hpack.js.
 */
import { Buffer } from "node:buffer";
import net from "node:net";
import tls from "node:tls";
import hpack from "hpack.js";

/** HTTP/2 frame types. */
export const FrameType = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;

/** HTTP/2 frame flags. */
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 };

/** HTTP/2 error codes used by tests. */
export const H2Error = { NO_ERROR: 0, PROTOCOL_ERROR: 1, CANCEL: 8 };

/** The connection preface a client sends first. */
export const PREFACE: Uint8Array = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One received frame. */
export interface H2Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
  /** Decoded header block (HEADERS, with its CONTINUATIONs), names lower case. */
  headers?: Record<string, string>;
}

/** Encodes one frame. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(9 + payload.byteLength);
  const v = new DataView(out.buffer);
  v.setUint8(0, (payload.byteLength >> 16) & 0xff);
  v.setUint16(1, payload.byteLength & 0xffff);
  v.setUint8(3, type);
  v.setUint8(4, flags);
  v.setUint32(5, streamId & 0x7fffffff);
  out.set(payload, 9);
  return out;
}

function hpackInt(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) + 128);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

/** HPACK block of literal fields without indexing (no Huffman, no table). */
export function encodeHeaderBlock(headers: [string, string][]): Uint8Array {
  const enc = new TextEncoder();
  const bytes: number[] = [];
  for (const [name, value] of headers) {
    const n = enc.encode(name);
    const v = enc.encode(value);
    bytes.push(0x00, ...hpackInt(n.length, 7, 0), ...n, ...hpackInt(v.length, 7, 0), ...v);
  }
  return new Uint8Array(bytes);
}

/** A gRPC length-prefixed message. */
export function grpcFrame(message: Uint8Array, compressed = false): Uint8Array {
  const out = new Uint8Array(5 + message.byteLength);
  out[0] = compressed ? 1 : 0;
  new DataView(out.buffer).setUint32(1, message.byteLength);
  out.set(message, 5);
  return out;
}

/** Splits concatenated gRPC messages (complete ones only). */
export function parseGrpcMessages(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  while (at + 5 <= bytes.byteLength) {
    const len = new DataView(bytes.buffer, bytes.byteOffset + at + 1, 4).getUint32(0);
    if (at + 5 + len > bytes.byteLength) break;
    out.push(bytes.slice(at + 5, at + 5 + len));
    at += 5 + len;
  }
  return out;
}

/** Options of {@link RawH2Client.connect}. */
export interface RawH2ConnectOptions {
  host: string;
  port: number;
  /** TLS with ALPN h2. */
  tls?: { ca: string; servername: string; cert?: string; key?: string };
  /** Answer SETTINGS and PING automatically (default true). */
  autoAck?: boolean;
}

/** See the module doc. */
export class RawH2Client {
  readonly frames: H2Frame[] = [];
  readonly closed: Promise<void>;
  readonly #socket: net.Socket;
  readonly #autoAck: boolean;
  #buffer = new Uint8Array(0);
  // deno-lint-ignore no-explicit-any
  readonly #decoder: any = hpack.decompressor.create({ table: { size: 4096 } });
  #headerBlock?: { frame: H2Frame; chunks: Uint8Array[] };
  #waiters: Array<() => void> = [];
  #isClosed = false;

  private constructor(socket: net.Socket, autoAck: boolean) {
    this.#socket = socket;
    this.#autoAck = autoAck;
    socket.setNoDelay(true);
    socket.on("error", () => {});
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.#isClosed = true;
        this.#wake();
        resolve();
      })
    );
  }

  /** Connects (TCP, or TLS with ALPN h2). Sends nothing yet. */
  static connect(opts: RawH2ConnectOptions): Promise<RawH2Client> {
    return new Promise((resolve, reject) => {
      const autoAck = opts.autoAck ?? true;
      if (opts.tls) {
        const s = tls.connect({
          host: opts.host,
          port: opts.port,
          ca: opts.tls.ca,
          cert: opts.tls.cert,
          key: opts.tls.key,
          servername: opts.tls.servername,
          ALPNProtocols: ["h2"],
        }, () => resolve(new RawH2Client(s, autoAck)));
        s.once("error", reject);
      } else {
        const s = net.connect(
          { host: opts.host, port: opts.port },
          () => resolve(new RawH2Client(s, autoAck)),
        );
        s.once("error", reject);
      }
    });
  }

  /** True once the socket closed. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Writes raw bytes. */
  write(bytes: Uint8Array): void {
    this.#socket.write(bytes);
  }

  /**
   * Writes the preface and a SETTINGS frame. With `openWindows` (default)
   * the receive windows are opened wide, so the server is never blocked by
   * flow control; without it they stay at 65535 bytes.
   */
  start(openWindows = true): void {
    this.write(PREFACE);
    if (!openWindows) {
      this.write(encodeFrame(FrameType.SETTINGS, 0, 0));
      return;
    }
    const settings = new Uint8Array(6);
    const v = new DataView(settings.buffer);
    v.setUint16(0, 0x4); // SETTINGS_INITIAL_WINDOW_SIZE
    v.setUint32(2, 0x7fffffff);
    this.write(encodeFrame(FrameType.SETTINGS, 0, 0, settings));
    this.windowUpdate(0, 0x7fffffff - 65535);
  }

  /** Sends a HEADERS frame. */
  headers(streamId: number, headers: [string, string][], endStream = false): void {
    this.write(encodeFrame(
      FrameType.HEADERS,
      Flag.END_HEADERS | (endStream ? Flag.END_STREAM : 0),
      streamId,
      encodeHeaderBlock(headers),
    ));
  }

  /** Opens a gRPC call: POST `path` with `metadata`. */
  grpcCall(streamId: number, path: string, metadata: Record<string, string> = {}): void {
    this.headers(streamId, [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", path],
      [":authority", "localhost"],
      ["content-type", "application/grpc"],
      ["te", "trailers"],
      ...Object.entries(metadata),
    ]);
  }

  /** Sends a DATA frame (at most 16384 bytes). */
  data(streamId: number, bytes: Uint8Array, endStream = false): void {
    this.write(encodeFrame(FrameType.DATA, endStream ? Flag.END_STREAM : 0, streamId, bytes));
  }

  /** Sends RST_STREAM. */
  rst(streamId: number, code: number): void {
    const p = new Uint8Array(4);
    new DataView(p.buffer).setUint32(0, code);
    this.write(encodeFrame(FrameType.RST_STREAM, 0, streamId, p));
  }

  /** Sends GOAWAY. */
  goaway(lastStreamId: number, code: number): void {
    const p = new Uint8Array(8);
    const v = new DataView(p.buffer);
    v.setUint32(0, lastStreamId);
    v.setUint32(4, code);
    this.write(encodeFrame(FrameType.GOAWAY, 0, 0, p));
  }

  /** Sends WINDOW_UPDATE. */
  windowUpdate(streamId: number, delta: number): void {
    const p = new Uint8Array(4);
    new DataView(p.buffer).setUint32(0, delta);
    this.write(encodeFrame(FrameType.WINDOW_UPDATE, 0, streamId, p));
  }

  /** Frames received on `streamId`. */
  streamFrames(streamId: number): H2Frame[] {
    return this.frames.filter((f) => f.streamId === streamId);
  }

  /** gRPC messages received on `streamId` so far. */
  grpcMessages(streamId: number): Uint8Array[] {
    const parts = this.streamFrames(streamId).filter((f) => f.type === FrameType.DATA);
    const all = new Uint8Array(parts.reduce((n, f) => n + f.payload.byteLength, 0));
    let at = 0;
    for (const f of parts) {
      all.set(f.payload, at);
      at += f.payload.byteLength;
    }
    return parseGrpcMessages(all);
  }

  /**
   * Resolves with the first received frame matching `pred` (earlier ones
   * included); rejects after `timeoutMs` or when the socket closed without one.
   */
  async waitFor(pred: (f: H2Frame) => boolean, timeoutMs = 5_000): Promise<H2Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find(pred);
      if (hit) return hit;
      if (this.#isClosed) throw new Error("Connection closed before the expected frame arrived");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No matching frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.#waiters.push(done);
      });
    }
  }

  /** The END_STREAM HEADERS (trailers) of `streamId`. */
  trailers(streamId: number, timeoutMs = 5_000): Promise<H2Frame> {
    return this.waitFor(
      (f) =>
        f.streamId === streamId && f.type === FrameType.HEADERS &&
        (f.flags & Flag.END_STREAM) !== 0,
      timeoutMs,
    );
  }

  /** Resolves once the socket closed; rejects after `timeoutMs`. */
  async waitClosed(timeoutMs = 5_000): Promise<void> {
    let t: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.closed,
        new Promise((_, reject) => {
          t = setTimeout(
            () => reject(new Error(`Socket still open after ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(t);
    }
  }

  /** Closes the socket abruptly (RST when the runtime supports it). */
  destroy(): void {
    const s = this.#socket as net.Socket & { resetAndDestroy?: () => void };
    if (typeof s.resetAndDestroy === "function") s.resetAndDestroy();
    else s.destroy();
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const fn of w) fn();
  }

  #onData(chunk: Buffer): void {
    const merged = new Uint8Array(this.#buffer.byteLength + chunk.byteLength);
    merged.set(this.#buffer);
    merged.set(chunk, this.#buffer.byteLength);
    let at = 0;
    while (merged.byteLength - at >= 9) {
      const len = (merged[at]! << 16) | (merged[at + 1]! << 8) | merged[at + 2]!;
      if (merged.byteLength - at < 9 + len) break;
      const frame: H2Frame = {
        type: merged[at + 3]!,
        flags: merged[at + 4]!,
        streamId: new DataView(merged.buffer, at + 5, 4).getUint32(0) & 0x7fffffff,
        payload: merged.slice(at + 9, at + 9 + len),
      };
      at += 9 + len;
      this.#onFrame(frame);
    }
    this.#buffer = merged.slice(at);
    this.#wake();
  }

  #onFrame(frame: H2Frame): void {
    if (frame.type === FrameType.SETTINGS && !(frame.flags & Flag.ACK) && this.#autoAck) {
      this.write(encodeFrame(FrameType.SETTINGS, Flag.ACK, 0));
    }
    if (frame.type === FrameType.PING && !(frame.flags & Flag.ACK) && this.#autoAck) {
      this.write(encodeFrame(FrameType.PING, Flag.ACK, 0, frame.payload));
    }
    if (frame.type === FrameType.HEADERS) {
      let block = frame.payload;
      let start = 0;
      let end = block.byteLength;
      if (frame.flags & Flag.PADDED) {
        start = 1;
        end -= block[0]!;
      }
      if (frame.flags & Flag.PRIORITY) start += 5;
      block = block.subarray(start, end);
      this.#headerBlock = { frame, chunks: [block] };
    } else if (frame.type === FrameType.CONTINUATION && this.#headerBlock) {
      this.#headerBlock.chunks.push(frame.payload);
    }
    if (
      (frame.type === FrameType.HEADERS || frame.type === FrameType.CONTINUATION) &&
      (frame.flags & Flag.END_HEADERS) && this.#headerBlock
    ) {
      const { frame: head, chunks } = this.#headerBlock;
      this.#headerBlock = undefined;
      for (const c of chunks) this.#decoder.write(Buffer.from(c));
      this.#decoder.execute();
      const headers: Record<string, string> = {};
      for (;;) {
        const h = this.#decoder.read();
        if (!h) break;
        headers[h.name] = h.value;
      }
      head.headers = headers;
    }
    // A CONTINUATION's fields land on its HEADERS frame; it is not recorded itself.
    if (frame.type !== FrameType.CONTINUATION) this.frames.push(frame);
  }
}
