/**
 * Every runtime patch we apply to spdy-transport 3.0.0's HTTP/2 mode, in one
 * place. spdy-transport is unmaintained (last release 2018) and we pin 3.0.0;
 * the patches replace methods on its `Stream` and `Connection` prototypes, no
 * fork. Why spdy-transport, and what was measured: docs/grpc-on-deno.md.
 *
 * - P1 trailers after DATA: spdy-transport has no trailers API. `sendHeaders()`
 *   never sets END_STREAM, and HEADERS go to the framer's synchronous queue,
 *   which is flushed before queued DATA, so trailers written next to messages
 *   could overtake them; `end()` always sends an empty DATA(END_STREAM).
 *   gRPC needs its status in trailers after the last message. The patched
 *   `Stream._final` sends the trailers as HEADERS(END_STREAM) after every
 *   `_write` callback (so after every DATA frame), and `_onFinish` skips the
 *   empty DATA frame when trailers were sent. {@link endWithTrailers} is the
 *   only way to use it.
 * - P2 RST_STREAM NO_ERROR: an RST_STREAM with NO_ERROR made the stream emit
 *   `error` "Got RST: NO_ERROR" (only CANCEL was exempt). HTTP/2 clients send
 *   NO_ERROR after a complete response; it is treated like CANCEL now.
 * - P3 `_destroy` callback: `Stream._destroy` never called its callback, so
 *   `stream.destroy(err, cb)` never completed. It aborts the stream, then
 *   calls back.
 * - P4 GOAWAY received by a server: the connection aborted every stream with
 *   an id above the GOAWAY's last-stream-id. That id names the *receiver's*
 *   streams (RFC 9113 section 6.8): a client's GOAWAY says 0, so every open
 *   call was reset with CANCEL. A server now treats a NO_ERROR GOAWAY as "the
 *   client opens no more streams": open calls finish, then the socket closes.
 *
 * - P7 GOAWAY codes: the parser reports a protocol error with a numeric code,
 *   and the connection handed it to the framer, which looks codes up by name:
 *   every GOAWAY sent after a peer's protocol error (a bad preface, an
 *   oversized or malformed frame) said 0 NO_ERROR. A numeric code is now
 *   turned into its name (in both modes), so the GOAWAY carries
 *   PROTOCOL_ERROR, FRAME_SIZE_ERROR, ... as RFC 9113 section 5.4.1 asks.
 *
 * SPDY/3.1 mode (the kubelet API's exec, attach and port-forward, whose peer
 * is the API server's Go spdystream, see aranya/kubelet/):
 *
 * - P5 SYN_STREAM without `:method`/`:path`: the parser refused such streams
 *   ("Missing `:method` and/or `:path` header"), but Kubernetes' streams carry
 *   only `streamtype`, `port` and `requestid`. A server now fills in POST and
 *   "/" when they are missing.
 * - P6 send window: Go's spdystream never sends WINDOW_UPDATE (nor SETTINGS),
 *   so output stalled after exactly 65536 bytes. {@link openSpdySendWindow}
 *   raises this side's send windows (connection and per stream) to 2^30 for a
 *   peer that does no flow control.
 *
 * `applySpdyPatches()` is idempotent; the server layers call it before they
 * create a connection.
 */
import type { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";
import transport from "spdy-transport";

/** Header map as spdy-transport passes it (values of repeated names may be arrays). */
export type SpdyHeaders = Record<string, string | string[] | undefined>;

/** The parts of spdy-transport's `Stream` (a readable-stream v3 Duplex) that we use. */
export interface SpdyStream {
  readonly id: number;
  readonly path: string | undefined;
  readonly method: string | undefined;
  readonly headers: SpdyHeaders;
  readonly connection: SpdyConnection;
  readonly writableLength: number;
  respond(status: number, headers: Record<string, string>, cb?: (err?: Error) => void): void;
  write(chunk: Uint8Array, cb?: (err?: Error | null) => void): boolean;
  end(cb?: () => void): void;
  abort(code?: string, cb?: () => void): void;
  destroy(err?: Error | null, cb?: (err: Error | null) => void): void;
  pause(): void;
  resume(): void;
  on(event: "data", fn: (chunk: Buffer) => void): this;
  on(event: "error", fn: (err: Error) => void): this;
  on(event: "end" | "close" | "finish", fn: () => void): this;
  once(event: "end" | "close" | "finish", fn: () => void): this;
  removeListener(event: string, fn: (...args: never[]) => void): this;
}

/** The parts of spdy-transport's `Connection` that we use. */
export interface SpdyConnection {
  on(event: "stream", fn: (stream: SpdyStream) => void): this;
  on(event: "error", fn: (err: Error) => void): this;
  on(event: "close", fn: () => void): this;
  once(event: "close", fn: () => void): this;
  /** Sends a PING; `cb` runs when the peer acknowledges it. */
  ping(cb: (err: Error | null) => void): void;
}

/** Options of `transport.connection.create` that we use. */
export interface SpdyConnectionOptions {
  protocol: "http2" | "spdy";
  isServer: boolean;
  /** Receive window, connection and per stream. */
  windowSize?: number;
  /** Advertised SETTINGS_MAX_CONCURRENT_STREAMS (not enforced by spdy-transport). */
  maxStreams?: number;
}

// deno-lint-ignore no-explicit-any
type Untyped = any;

const lib: Untyped = transport;
const StreamProto: Untyped = lib.Stream.prototype;
const ConnectionProto: Untyped = lib.Connection.prototype;

/** Marks the prototypes as patched; global so that two copies of this module agree. */
const PATCHED = Symbol.for("aranya.spdy-transport.patched");
/** Where {@link endWithTrailers} parks the trailers for P1; global for the same reason. */
const TRAILERS = Symbol.for("aranya.spdy-transport.trailers");

interface PendingTrailers {
  trailers: Record<string, string>;
  /** Set for a Trailers-Only response: no HEADERS were sent yet. */
  response?: { status: number; headers: Record<string, string> };
}

/** Applies P1-P5 (see the module doc). Safe to call any number of times. */
export function applySpdyPatches(): void {
  if (StreamProto[PATCHED]) return;

  // P1: trailers after all DATA. readable-stream v3 calls `_final` once every
  // `_write` callback ran; each callback runs after its DATA frames went to
  // the framer, so the HEADERS frame below follows them on the wire.
  StreamProto._final = function (this: Untyped, cb: (err?: Error | null) => void) {
    const pending: PendingTrailers | undefined = this[TRAILERS];
    if (!pending || this._spdyState.aborted) return cb();
    const framer = this._spdyState.framer;
    const done = (err?: Error | null) => cb(err ?? null);
    if (pending.response) {
      framer.responseFrame({
        id: this.id,
        status: pending.response.status,
        headers: { ...pending.response.headers, ...pending.trailers },
        fin: true,
      }, done);
    } else {
      framer.headersFrame({ id: this.id, headers: pending.trailers, fin: true }, done);
    }
  };
  const onFinish = StreamProto._onFinish;
  StreamProto._onFinish = function (this: Untyped) {
    // The trailers carried END_STREAM: no empty DATA(END_STREAM) after them.
    if (this[TRAILERS]) return this._maybeClose();
    return onFinish.call(this);
  };

  // P2: RST_STREAM NO_ERROR is a normal end, like CANCEL.
  StreamProto._handleRST = function (this: Untyped, frame: { code: string }) {
    if (frame.code !== "CANCEL" && frame.code !== "NO_ERROR" && frame.code !== "OK") {
      this.emit("error", new Error("Got RST: " + frame.code));
    }
    this.abort();
  };

  // P3: `_destroy` completes.
  StreamProto._destroy = function (
    this: Untyped,
    err: Error | null,
    cb: (err: Error | null) => void,
  ) {
    this.abort();
    cb(err);
  };

  // P4: a client's GOAWAY(NO_ERROR) lets open calls finish.
  const handleGoaway = ConnectionProto._handleGoaway;
  ConnectionProto._handleGoaway = function (
    this: Untyped,
    frame: { lastId: number; code: string },
  ) {
    if (this._spdyState.isServer && frame.code === "OK") {
      return this._goaway({ lastId: 0x7fffffff, code: "OK", send: false });
    }
    return handleGoaway.call(this, frame);
  };

  // P7: a protocol error's GOAWAY names its code.
  const goaway = ConnectionProto._goaway;
  ConnectionProto._goaway = function (this: Untyped, params: { code: string | number }) {
    if (typeof params.code === "number") {
      const c = this._spdyState.constants;
      const name = c.errorByCode[params.code];
      const code = name !== undefined && c.goaway[name] !== undefined ? name : "PROTOCOL_ERROR";
      return goaway.call(this, { ...params, code });
    }
    return goaway.call(this, params);
  };

  // P5: SPDY streams without :method/:path (a server's parser only).
  const ParserProto: Untyped = Object.getPrototypeOf(
    lib.protocol.spdy.parser.create({ isServer: true, window: null }),
  );
  const parseKVs = ParserProto.parseKVs;
  ParserProto.parseKVs = function (
    this: Untyped,
    buf: Buffer,
    cb: (err: Error | null, headers?: Record<string, string>) => void,
  ) {
    return parseKVs.call(this, buf, (err: Error | null, headers?: Record<string, string>) => {
      if (!err && headers && this.isServer) {
        headers[":method"] ??= "POST";
        headers[":path"] ??= "/";
      }
      cb(err, headers);
    });
  };

  StreamProto[PATCHED] = true;
}

/**
 * P6: for a peer that never sends WINDOW_UPDATE (Go's spdystream), lets this
 * side send up to 2^30 bytes on the connection and on each stream opened
 * afterwards without waiting. Call right after creating the connection.
 */
export function openSpdySendWindow(connection: SpdyConnection): void {
  const state = (connection as Untyped)._spdyState;
  state.window.send.updateMax(2 ** 30);
  state.streamWindow.send.setMax(2 ** 30);
}

/** True once {@link applySpdyPatches} ran. */
export function spdyPatchesApplied(): boolean {
  return StreamProto[PATCHED] === true;
}

/**
 * Ends `stream` with `trailers` (P1): they go out as one HEADERS frame with
 * END_STREAM after everything written before. With `response`, no HEADERS were
 * sent on the stream yet and the response is Trailers-Only: a single HEADERS
 * frame holding the status, `response.headers` and `trailers`. Call once, and
 * write nothing afterwards.
 */
export function endWithTrailers(
  stream: SpdyStream,
  trailers: Record<string, string>,
  response?: { status: number; headers: Record<string, string> },
): void {
  if (!spdyPatchesApplied()) {
    throw new Error("endWithTrailers needs applySpdyPatches() to have run");
  }
  const pending: PendingTrailers = { trailers, response };
  (stream as Untyped)[TRAILERS] = pending;
  stream.end();
}

/**
 * True while `connection` has frames that are not yet handed to its socket
 * (queued in the framer's scheduler or buffered in the framer's readable side,
 * for example while the socket applies backpressure). Closing the socket
 * before this turns false would drop them.
 */
export function spdyOutputPending(connection: SpdyConnection): boolean {
  const framer = (connection as Untyped)._spdyState.framer;
  return framer.count > 0 || framer.readableLength > 0;
}

/**
 * Streams `connection` still tracks: open ones, plus ones this side ended
 * while the peer has not closed its half yet.
 */
export function spdyStreamCount(connection: SpdyConnection): number {
  return (connection as Untyped)._spdyState.stream.count;
}

/**
 * Creates a spdy-transport connection on `socket` (a node:net or node:tls
 * socket) after applying the patches: HTTP/2, or SPDY/3.1 started at once
 * (a kubelet-side upgrade has no protocol negotiation).
 */
export function createSpdyConnection(
  socket: Duplex,
  options: SpdyConnectionOptions,
): SpdyConnection {
  applySpdyPatches();
  const conn = lib.connection.create(socket, options);
  if (options.protocol === "spdy") conn.start(3.1);
  return conn as SpdyConnection;
}
