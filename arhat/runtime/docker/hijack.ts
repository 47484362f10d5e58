/**
 * Hijacked HTTP/1.1 connections to the Docker Engine API (exec start and
 * attach): one request on a fresh Unix socket connection with
 * `Connection: Upgrade` / `Upgrade: tcp`; the engine answers
 * `HTTP/1.1 101 UPGRADED` (or `200 OK` from engines that ignore the upgrade)
 * and from then on the socket carries the process's stdin one way and its
 * output the other. fetch cannot do this, so the request and the response
 * head are written and parsed here.
 */
import { CanceledError, ProtocolError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { engineMessage, httpError, transportError } from "./engine_error.ts";
import { concatBytes } from "@aranya/common/bytes";

/** Longest response head accepted. */
const MAX_HEAD = 64 * 1024;
/** Longest error body read after a refused upgrade. */
const MAX_ERROR_BODY = 64 * 1024;
const READ_SIZE = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A parsed HTTP/1.1 response head. */
export interface ResponseHead {
  status: number;
  reason: string;
  headers: Headers;
  /** Bytes the head took, including the blank line. */
  length: number;
}

/**
 * Parses a response head at the start of `buf`.
 *
 * Contract: undefined while the blank line ending the head has not arrived;
 * ProtocolError when the status line or a header line is malformed.
 */
export function parseResponseHead(buf: Uint8Array): ResponseHead | undefined {
  const end = indexOfBlankLine(buf);
  if (end < 0) return undefined;
  const lines = decoder.decode(buf.subarray(0, end)).split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? "");
  if (!m) throw new ProtocolError(`Malformed HTTP status line "${lines[0]}" from the engine`);
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new ProtocolError(`Malformed HTTP header line "${line}" from the engine`);
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return { status: Number(m[1]), reason: m[2] ?? "", headers, length: end + 4 };
}

/**
 * Decodes a complete `Transfer-Encoding: chunked` body.
 *
 * Contract: undefined while the terminating zero-size chunk has not arrived;
 * ProtocolError on a malformed chunk size.
 */
export function decodeChunked(buf: Uint8Array): Uint8Array | undefined {
  const parts: Uint8Array[] = [];
  let pos = 0;
  while (true) {
    const lineEnd = indexOfCrlf(buf, pos);
    if (lineEnd < 0) return undefined;
    const sizeText = decoder.decode(buf.subarray(pos, lineEnd)).split(";")[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) {
      throw new ProtocolError(`Malformed chunk size "${sizeText}" from the engine`);
    }
    const size = parseInt(sizeText, 16);
    pos = lineEnd + 2;
    if (size === 0) return concatBytes(parts);
    if (buf.length < pos + size + 2) return undefined;
    parts.push(buf.subarray(pos, pos + size));
    pos += size + 2;
  }
}

/** What to send. */
export interface HijackOptions {
  /** Engine Unix socket path. */
  socket: string;
  method: string;
  /** Request target including the API version, e.g. "/v1.41/exec/abc/start". */
  path: string;
  /** JSON request body. */
  body?: unknown;
  /** What is attempted, for error messages, e.g. `Starting exec "abc"`. */
  what: string;
  signal?: AbortSignal;
  log?: Logger;
}

/** An upgraded connection. */
export interface HijackedConnection {
  /** 101 or 200. */
  readonly status: number;
  readonly headers: Headers;
  /**
   * Everything the engine sends after the response head, in order; ends at
   * the engine's end of stream or on {@link close}. Canceling it closes the
   * connection.
   */
  readonly output: ReadableStream<Uint8Array>;
  /** Writes all of `data`; rejects once the connection is closed. */
  write(data: Uint8Array): Promise<void>;
  /** Half-closes: the engine sees end of input, output keeps flowing. */
  closeWrite(): Promise<void>;
  /** Closes the connection (idempotent); `output` ends. */
  close(): void;
}

/**
 * Opens a connection to the engine, sends the request and reads the response
 * head.
 *
 * Contract: resolves once the engine accepted the upgrade (status 101 or
 * 200). Any other status rejects with the mapped domain error carrying the
 * engine's message (see `httpError`), an unreachable socket with
 * UnavailableError, an aborted `signal` with CanceledError; in every failure
 * case the connection is closed. Aborting `signal` later closes the
 * connection. The caller must consume or cancel `output`, or call `close`.
 */
export async function hijack(opts: HijackOptions): Promise<HijackedConnection> {
  const log = opts.log ?? nullLogger;
  if (opts.signal?.aborted) throw new CanceledError(`${opts.what} was canceled`);
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path: opts.socket });
  } catch (err) {
    throw transportError(opts.what, opts.socket, err);
  }
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    opts.signal?.removeEventListener("abort", close);
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  opts.signal?.addEventListener("abort", close, { once: true });
  try {
    const body = opts.body === undefined
      ? new Uint8Array()
      : encoder.encode(JSON.stringify(opts.body));
    const head = `${opts.method} ${opts.path} HTTP/1.1\r\n` +
      "Host: d\r\n" +
      "Connection: Upgrade\r\n" +
      "Upgrade: tcp\r\n" +
      (opts.body === undefined ? "" : "Content-Type: application/json\r\n") +
      `Content-Length: ${body.length}\r\n\r\n`;
    await writeAll(conn, concatBytes([encoder.encode(head), body]));
    let buf: Uint8Array = new Uint8Array();
    let parsed: ResponseHead | undefined;
    while (!(parsed = parseResponseHead(buf))) {
      if (buf.length > MAX_HEAD) {
        throw new ProtocolError(`${opts.what} failed: the engine's response head is too long`);
      }
      const chunk = await readChunk(conn);
      if (!chunk) {
        throw new ProtocolError(`${opts.what} failed: the engine closed the connection early`);
      }
      buf = concatBytes([buf, chunk]);
    }
    const leftover = buf.slice(parsed.length);
    if (parsed.status !== 101 && parsed.status !== 200) {
      const text = decoder.decode(await readErrorBody(conn, parsed.headers, leftover));
      throw httpError(opts.what, parsed.status, engineMessage(text) || parsed.reason);
    }
    log.debug("engine connection upgraded", { path: opts.path, status: parsed.status });
    return {
      status: parsed.status,
      headers: parsed.headers,
      output: connOutput(conn, leftover, () => closed, close),
      write: (data) => writeAll(conn, data),
      closeWrite: async () => {
        if (!closed) await conn.closeWrite();
      },
      close,
    };
  } catch (err) {
    const wasClosed = closed;
    close();
    if (wasClosed && opts.signal?.aborted) {
      throw new CanceledError(`${opts.what} was canceled`, { cause: err });
    }
    throw transportError(opts.what, opts.socket, err);
  }
}

function connOutput(
  conn: Deno.UnixConn,
  leftover: Uint8Array,
  isClosed: () => boolean,
  close: () => void,
): ReadableStream<Uint8Array> {
  let pending: Uint8Array | undefined = leftover.length > 0 ? leftover : undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (pending) {
        controller.enqueue(pending);
        pending = undefined;
        return;
      }
      try {
        const chunk = isClosed() ? null : await readChunk(conn);
        if (chunk) {
          controller.enqueue(chunk);
          return;
        }
        close();
        controller.close();
      } catch (err) {
        // A read interrupted by our own close() is the end of output, not an error.
        if (isClosed()) {
          controller.close();
        } else {
          close();
          controller.error(err);
        }
      }
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
}

async function readChunk(conn: Deno.UnixConn): Promise<Uint8Array | null> {
  const buf = new Uint8Array(READ_SIZE);
  const n = await conn.read(buf);
  return n === null ? null : buf.subarray(0, n);
}

async function writeAll(conn: Deno.UnixConn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** Reads the body of a refused request: by Content-Length, chunked, or to EOF; capped. */
async function readErrorBody(
  conn: Deno.UnixConn,
  headers: Headers,
  start: Uint8Array,
): Promise<Uint8Array> {
  const length = Number(headers.get("content-length") ?? NaN);
  const chunked = /chunked/i.test(headers.get("transfer-encoding") ?? "");
  let buf = start;
  while (true) {
    if (!Number.isNaN(length) && buf.length >= length) return buf.subarray(0, length);
    if (chunked) {
      const body = decodeChunked(buf);
      if (body) return body;
    }
    if (buf.length > MAX_ERROR_BODY) return buf.subarray(0, MAX_ERROR_BODY);
    const chunk = await readChunk(conn);
    if (!chunk) return buf;
    buf = concatBytes([buf, chunk]);
  }
}

function indexOfBlankLine(buf: Uint8Array): number {
  for (let i = 0; i + 3 < buf.length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

function indexOfCrlf(buf: Uint8Array, from: number): number {
  for (let i = from; i + 1 < buf.length; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10) return i;
  }
  return -1;
}
