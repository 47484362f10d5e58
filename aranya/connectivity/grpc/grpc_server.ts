/**
 * A small gRPC server: HTTP/2 (h2c over `node:net`, or TLS with ALPN "h2" over
 * `node:tls`, optionally asking for client certificates), streaming calls
 * whose messages stay raw bytes. It knows nothing about devices; the link
 * server (grpc_link_server.ts) sits on top.
 *
 * Why not `node:http2` (and so not a grpc-js server): in Deno 2.9 a peer's
 * GOAWAY can abort the whole process inside Deno's nghttp2 binding
 * (denoland/deno#36788; a grpc-js server died after the first client
 * disconnect that followed a long stream). So HTTP/2 framing comes from
 * spdy-transport 3.0.0's http2 mode, pure JS, with the patches in
 * aranya/spdy/spdy_patches.ts; it had no crash in any test of docs/grpc-on-deno.md.
 *
 * Rules this layer keeps:
 * - It sends no GOAWAY to a peer that keeps the protocol. A Deno grpc-js
 *   client that gets a GOAWAY on an idle connection dies (same bug). Calls end
 *   with trailers; a connection whose last call ended is closed at the TCP
 *   level once its frames are flushed; shutdown ends every call with status
 *   14 (UNAVAILABLE), then closes the TCP connections. A peer that breaks the
 *   protocol (a bad preface, an oversized or malformed frame) gets GOAWAY with
 *   the HTTP/2 error code (PROTOCOL_ERROR, FRAME_SIZE_ERROR, ...; RFC 9113
 *   section 5.4.1), and its connection is closed.
 * - Status always travels in trailers (Trailers-Only when no message was
 *   sent), with `grpc-message` percent-encoded.
 * - Messages are parsed from a chunk list (no quadratic concatenation), are
 *   capped in size (RESOURCE_EXHAUSTED), and compression is refused.
 * - Each connection carries a bounded number of concurrent calls (advertised in
 *   SETTINGS_MAX_CONCURRENT_STREAMS; more are refused with RST_STREAM
 *   REFUSED_STREAM, as are calls that arrive while the connection closes),
 *   must open its first call within a deadline, and may be probed with PINGs.
 * - Every socket, connection and stream has an `error` listener (readable-stream
 *   throws on an unhandled `error` event), and `setNoDelay(true)` is set
 *   (otherwise Nagle plus delayed ACKs cost about 40 ms per message).
 *
 * Not implemented: `grpc-timeout` (calls have no deadline), compression, and
 * unary helpers (handlers see every call as a stream).
 */
import { Buffer } from "node:buffer";
import net from "node:net";
import tls from "node:tls";
import { guardConnections } from "@aranya/common/connection_guard";
import { UnavailableError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import {
  createSpdyConnection,
  endWithTrailers,
  type SpdyConnection,
  spdyOutputPending,
  type SpdyStream,
  spdyStreamCount,
} from "../../spdy/spdy_patches.ts";

/** gRPC status codes (https://grpc.io/docs/guides/status-codes/). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** One of {@link GrpcStatus}. */
export type GrpcStatusCode = (typeof GrpcStatus)[keyof typeof GrpcStatus];

/**
 * Percent-encodes a `grpc-message` value: UTF-8 bytes outside 0x20-0x7E, and
 * "%", become "%XX" (gRPC over HTTP/2 spec).
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(message)) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25
      ? String.fromCharCode(b)
      : "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** Length-prefixed message framing: 1 flag byte, 4 bytes big-endian length. */
export const MESSAGE_HEADER_SIZE = 5;

/** Why a byte stream is not valid gRPC messages. */
export interface GrpcReadError {
  code: GrpcStatusCode;
  details: string;
}

/**
 * Splits a call's DATA bytes into gRPC messages. Bytes are kept as a list of
 * received chunks and each message is copied out once, so reading is linear in
 * the bytes received, however the peer splits them.
 */
export class GrpcMessageReader {
  #chunks: Uint8Array[] = [];
  /** Read offset into `#chunks[0]`. */
  #offset = 0;
  #buffered = 0;
  /** Length of the message whose header was read, or -1. */
  #need = -1;

  /** `maxMessageSize`: the largest message accepted, in bytes. */
  constructor(readonly maxMessageSize: number) {}

  /** Bytes received but not yet returned as messages. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Adds `chunk` (kept by reference until consumed; not modified) and returns
   * the messages it completes, each a fresh copy; or an error once the stream
   * is invalid (oversized or compressed message), after which the reader must
   * not be used.
   */
  push(chunk: Uint8Array): { messages: Uint8Array[]; error?: GrpcReadError } {
    const messages: Uint8Array[] = [];
    if (chunk.byteLength > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.byteLength;
    }
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < MESSAGE_HEADER_SIZE) break;
        const head = this.#take(MESSAGE_HEADER_SIZE);
        const flag = head[0]!;
        const length = ((head[1]! << 24) >>> 0) + (head[2]! << 16) + (head[3]! << 8) + head[4]!;
        if (flag === 1) {
          return {
            messages,
            error: {
              code: GrpcStatus.INTERNAL,
              details: "Received a compressed message; compression is not supported",
            },
          };
        }
        if (flag !== 0) {
          return {
            messages,
            error: {
              code: GrpcStatus.INTERNAL,
              details: `Received a message with invalid flags 0x${flag.toString(16)}`,
            },
          };
        }
        if (length > this.maxMessageSize) {
          return {
            messages,
            error: {
              code: GrpcStatus.RESOURCE_EXHAUSTED,
              details:
                `Received a message of ${length} bytes, above the limit of ${this.maxMessageSize}`,
            },
          };
        }
        this.#need = length;
      }
      if (this.#buffered < this.#need) break;
      messages.push(this.#take(this.#need));
      this.#need = -1;
    }
    return { messages };
  }

  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const first = this.#chunks[0]!;
      const available = first.byteLength - this.#offset;
      const count = Math.min(available, n - filled);
      out.set(first.subarray(this.#offset, this.#offset + count), filled);
      filled += count;
      this.#offset += count;
      if (this.#offset === first.byteLength) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    this.#buffered -= n;
    return out;
  }
}

/** Encodes one gRPC message (uncompressed). */
export function encodeGrpcMessageFrame(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(MESSAGE_HEADER_SIZE + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, MESSAGE_HEADER_SIZE);
  return frame;
}

/** How a call ended. */
export interface CallCloseInfo {
  /** "local": this server ended it (`end`); "remote": the client canceled it; "error": the connection failed. */
  by: "local" | "remote" | "error";
  /** The gRPC status sent ("local"), or the one that describes the end best. */
  code: GrpcStatusCode;
  details: string;
}

/** Receives one call's events; see {@link GrpcServerCall.start}. */
export interface CallListener {
  /** One message from the client, in order; the bytes belong to the listener. */
  onMessage(message: Uint8Array): void;
  /** The client has sent everything (half-close); the call stays open for writes. */
  onHalfClose(): void;
  /** The call ended, whichever way; called exactly once, last. */
  onClose(info: CallCloseInfo): void;
}

/** Handles calls to one method. Must not throw; errors end the call with INTERNAL. */
export type GrpcHandler = (call: GrpcServerCall) => void;

/** TLS settings of {@link GrpcServer}. */
export interface GrpcServerTls {
  /** PEM certificate chain. */
  cert: string | Uint8Array;
  /** PEM private key. */
  key: string | Uint8Array;
  /** PEM CA certificates that client certificates must chain to. */
  ca?: string | Uint8Array;
  /**
   * Ask clients for a certificate. Clients without one are still admitted;
   * a verified certificate's subject CN is offered as
   * {@link GrpcServerCall.clientCertificateCN}.
   */
  requestCert?: boolean;
}

/** Options of {@link GrpcServer}. */
export interface GrpcServerOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on; 0 picks a free one (see {@link GrpcServer.port}). */
  port: number;
  /** Serve TLS with ALPN "h2"; without it, h2c with prior knowledge. */
  tls?: GrpcServerTls;
  /** The largest message a client may send, in bytes; larger ends the call with RESOURCE_EXHAUSTED. */
  maxMessageSize: number;
  /** Concurrent calls per connection (default 16). */
  maxCallsPerConnection?: number;
  /** A connection that opens no call within this time is closed (default 10000 ms). */
  handshakeTimeoutMs?: number;
  /** Most open connections from one remote address (default 256). */
  maxConnectionsPerAddress?: number;
  /** PING every connection at this interval and drop it if a PING stays unanswered for as long; 0 (default) turns it off. */
  keepaliveMs?: number;
  /** How long shutdown and idle closes wait for pending frames before destroying a socket (default 1000 ms). */
  closeGraceMs?: number;
  log?: Logger;
}

const DEFAULT_MAX_CALLS = 16;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_CLOSE_GRACE_MS = 1_000;
/** Streams per connection (open or half-closed by us), in units of the call limit. */
const LINGERING_STREAMS_FACTOR = 4;
/** HTTP/2 receive window, connection and per stream. */
const WINDOW_SIZE = 1 << 20;

type ServerSocket = net.Socket | tls.TLSSocket;

/** One accepted connection. */
class ServerConnection {
  readonly calls = new Set<GrpcServerCall>();
  /** Streams whose trailers were queued but not yet handed to the framer. */
  readonly finishing = new Set<Promise<void>>();
  streamsSeen = 0;
  socketClosed = false;
  closing = false;
  readonly closed: Promise<void>;
  #timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(
    readonly socket: ServerSocket,
    readonly spdy: SpdyConnection,
    readonly clientCertificateCN: string | undefined,
    readonly remote: string,
  ) {
    // Synchronous, so that the calls' "close" events (emitted on the next
    // tick after spdy-transport destroys the streams) see socketClosed.
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.socketClosed = true;
        for (const t of this.#timers) clearTimeout(t);
        this.#timers.clear();
        resolve();
      })
    );
  }

  #pingTimer?: ReturnType<typeof setTimeout>;
  /** Called when the peer left a PING unanswered for a whole interval (before the socket goes). */
  onPingTimeout: () => void = () => {};

  /**
   * PINGs the peer every `ms` and destroys the socket when a PING is still
   * unanswered at the next; 0 stops. Calling it again restarts the schedule
   * with the new interval (a device's own, once its call named it).
   */
  keepalive(ms: number): void {
    this.clearTimer(this.#pingTimer);
    this.#pingTimer = undefined;
    if (!(ms > 0)) return;
    let unanswered = false;
    const tick = () => {
      if (unanswered) {
        this.onPingTimeout();
        this.socket.destroy();
        return;
      }
      unanswered = true;
      this.spdy.ping(() => unanswered = false);
      this.#pingTimer = this.timer(ms, tick);
    };
    this.#pingTimer = this.timer(ms, tick);
  }

  /** A timer that dies with the connection. */
  timer(ms: number, fn: () => void): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
    return t;
  }

  clearTimer(t: ReturnType<typeof setTimeout> | undefined): void {
    if (t === undefined) return;
    clearTimeout(t);
    this.#timers.delete(t);
  }

  /** Tracks a stream's trailers until they reached the framer. */
  trackFinish(stream: SpdyStream): void {
    const p = new Promise<void>((resolve) => {
      stream.once("finish", resolve);
      stream.once("close", resolve);
    });
    this.finishing.add(p);
    p.then(() => this.finishing.delete(p));
  }

  /**
   * Closes the TCP connection without GOAWAY: waits (up to `graceMs`) until
   * every queued frame (trailers included) went to the socket, ends the socket
   * (FIN after the queued bytes), and destroys it if it is still open after
   * another `graceMs`. With `onlyIfIdle`, gives up when a new call arrived
   * meanwhile.
   */
  async close(graceMs: number, onlyIfIdle: boolean): Promise<void> {
    if (this.closing || this.socketClosed) return this.closed;
    this.closing = true;
    const deadline = Date.now() + graceMs;
    while (!this.socketClosed && Date.now() < deadline) {
      if (this.finishing.size === 0 && !spdyOutputPending(this.spdy)) break;
      await new Promise<void>((resolve) => this.timer(2, resolve));
    }
    if (this.socketClosed) return;
    if (onlyIfIdle && this.calls.size > 0) {
      this.closing = false;
      return;
    }
    this.socket.end();
    this.timer(graceMs, () => this.socket.destroy());
    await this.closed;
  }
}

/**
 * One server-side gRPC call. The handler reads the metadata, then either ends
 * the call (`end`) or accepts it (`sendHeaders`, `start`) and exchanges
 * messages until one side ends it.
 */
export class GrpcServerCall {
  readonly #stream: SpdyStream;
  readonly #conn: ServerConnection;
  readonly #onFinished: (call: GrpcServerCall) => void;
  readonly #reader: GrpcMessageReader;
  #listener?: CallListener;
  #headersSent = false;
  #closeInfo?: CallCloseInfo;

  /** @internal Created by {@link GrpcServer}. */
  constructor(
    stream: SpdyStream,
    conn: ServerConnection,
    maxMessageSize: number,
    onFinished: (call: GrpcServerCall) => void,
  ) {
    this.#stream = stream;
    this.#conn = conn;
    this.#onFinished = onFinished;
    this.#reader = new GrpcMessageReader(maxMessageSize);
    stream.on("close", () => {
      if (this.#closeInfo) return;
      this.#finish(
        conn.socketClosed
          ? { by: "error", code: GrpcStatus.UNAVAILABLE, details: "Connection closed" }
          : { by: "remote", code: GrpcStatus.CANCELLED, details: "Call canceled by the client" },
      );
    });
  }

  /** The method path, "/package.Service/Method". */
  get path(): string {
    return this.#stream.path ?? "";
  }

  /**
   * Sets the PING interval of this call's connection, ms (0: none), replacing
   * the server's `keepaliveMs` for it (e.g. the device's own, once known).
   */
  setKeepalive(ms: number): void {
    this.#conn.keepalive(ms);
  }

  /** The client's address, "ip:port". */
  get peer(): string {
    return this.#conn.remote;
  }

  /** Subject CN of the client's certificate, when it sent one and it verified against the CA. */
  get clientCertificateCN(): string | undefined {
    return this.#conn.clientCertificateCN;
  }

  /** A request header (metadata) by lower-case name; the first value when repeated. */
  metadata(name: string): string | undefined {
    const v = this.#stream.headers[name];
    return Array.isArray(v) ? v[0] : v;
  }

  /** True once the call ended, whichever way. */
  get isClosed(): boolean {
    return this.#closeInfo !== undefined;
  }

  /** Sends the response headers now (once; later calls do nothing). Writes send them too. */
  sendHeaders(): void {
    if (this.#headersSent || this.#closeInfo) return;
    this.#headersSent = true;
    this.#stream.respond(200, { "content-type": "application/grpc" });
  }

  /**
   * Starts reading the client's messages into `listener` (call once). Until
   * then nothing is read and HTTP/2 flow control holds the client back. If
   * the call ended already, `listener.onClose` runs soon after.
   */
  start(listener: CallListener): void {
    if (this.#listener) throw new Error("GrpcServerCall.start was called twice");
    this.#listener = listener;
    if (this.#closeInfo) {
      const info = this.#closeInfo;
      queueMicrotask(() => listener.onClose(info));
      return;
    }
    this.#stream.on("data", (chunk: Buffer) => {
      if (this.#closeInfo) return;
      const { messages, error } = this.#reader.push(chunk);
      for (const m of messages) {
        if (this.#closeInfo) return;
        listener.onMessage(m);
      }
      if (error) this.end(error.code, error.details);
    });
    this.#stream.on("end", () => {
      if (this.#closeInfo) return;
      if (this.#reader.buffered > 0) {
        this.end(
          GrpcStatus.INTERNAL,
          `Client ended the call inside a message (${this.#reader.buffered} bytes left over)`,
        );
        return;
      }
      listener.onHalfClose();
    });
  }

  /**
   * Sends one message after every message written before. Resolves once its
   * DATA frames went to the connection (HTTP/2 flow control delays that while
   * the client does not read); rejects with `UnavailableError` once the call
   * ended. `message` may be reused afterwards (it is copied).
   */
  write(message: Uint8Array): Promise<void> {
    if (this.#closeInfo) {
      return Promise.reject(new UnavailableError(`Call "${this.path}" has ended`));
    }
    this.sendHeaders();
    const frame = encodeGrpcMessageFrame(message);
    return new Promise((resolve, reject) => {
      this.#stream.write(frame, (err) => {
        if (err) {
          reject(new UnavailableError(`Call "${this.path}" failed to send: ${err.message}`));
        } else resolve();
      });
    });
  }

  /**
   * Ends the call with `code` and `details` in trailers, after every message
   * written before (Trailers-Only when no headers were sent). Idempotent: does
   * nothing once the call ended.
   */
  end(code: GrpcStatusCode, details = "", extraTrailers: Record<string, string> = {}): void {
    if (this.#closeInfo) return;
    const trailers: Record<string, string> = { ...extraTrailers, "grpc-status": String(code) };
    if (details) trailers["grpc-message"] = encodeGrpcMessage(details);
    this.#conn.trackFinish(this.#stream);
    endWithTrailers(
      this.#stream,
      trailers,
      this.#headersSent
        ? undefined
        : { status: 200, headers: { "content-type": "application/grpc" } },
    );
    this.#headersSent = true;
    this.#finish({ by: "local", code, details });
  }

  /**
   * Refuses the call at the HTTP/2 level (RST_STREAM REFUSED_STREAM): the
   * client knows nothing was processed and grpc-js may retry it on a new
   * connection. For calls that arrive while their connection closes.
   */
  refuse(details: string): void {
    if (this.#closeInfo) return;
    this.#stream.abort("REFUSED_STREAM");
    this.#finish({ by: "local", code: GrpcStatus.UNAVAILABLE, details });
  }

  #finish(info: CallCloseInfo): void {
    this.#closeInfo = info;
    this.#onFinished(this);
    this.#listener?.onClose(info);
  }
}

/** A gRPC server; see the module doc. Construction does no I/O. */
export class GrpcServer {
  readonly #opts: GrpcServerOptions;
  readonly #handlers: ReadonlyMap<string, GrpcHandler>;
  readonly #log: Logger;
  readonly #maxCalls: number;
  readonly #graceMs: number;
  readonly #conns = new Set<ServerConnection>();
  #server?: net.Server | tls.Server;
  #port = 0;
  #shutdown?: Promise<void>;

  constructor(opts: GrpcServerOptions, handlers: Record<string, GrpcHandler>) {
    this.#opts = opts;
    this.#handlers = new Map(Object.entries(handlers));
    this.#log = opts.log ?? nullLogger;
    this.#maxCalls = opts.maxCallsPerConnection ?? DEFAULT_MAX_CALLS;
    this.#graceMs = opts.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS;
  }

  /** The bound port once `listen` resolved, 0 before. */
  get port(): number {
    return this.#port;
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.#conns.size;
  }

  /** Calls in progress, over all connections. */
  get callCount(): number {
    let n = 0;
    for (const c of this.#conns) n += c.calls.size;
    return n;
  }

  /** Starts listening; resolves with the bound port. Rejects when the address cannot be bound. */
  listen(): Promise<number> {
    if (this.#server) return Promise.reject(new Error("GrpcServer.listen was called twice"));
    const t = this.#opts.tls;
    const server = t
      ? tls.createServer({
        cert: toPem(t.cert),
        key: toPem(t.key),
        ca: t.ca === undefined ? undefined : toPem(t.ca),
        requestCert: t.requestCert ?? false,
        // Clients without a certificate authenticate with a token instead;
        // `authorized` tells whether a presented certificate verified.
        rejectUnauthorized: false,
        ALPNProtocols: ["h2"],
        handshakeTimeout: this.#opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      }, (socket) => this.#acceptTls(socket))
      : net.createServer((socket) => this.#accept(socket, undefined));
    this.#server = server;
    // Floods from one address cannot hold more than a bounded number of connections (the
    // handshake timeout bounds how long each is held).
    guardConnections(server, {
      perAddress: this.#opts.maxConnectionsPerAddress ?? 256,
      firstRequestMs: 0,
    });
    server.on("tlsClientError", (err: Error) => {
      this.#log.debug("TLS handshake failed", { error: err.message });
    });
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once("error", onError);
      server.listen({ host: this.#opts.hostname, port: this.#opts.port }, () => {
        server.removeListener("error", onError);
        server.on(
          "error",
          (err: Error) => this.#log.warn("Listener error", { error: err.message }),
        );
        const addr = server.address();
        this.#port = typeof addr === "object" && addr ? addr.port : this.#opts.port;
        resolve(this.#port);
      });
    });
  }

  /**
   * Stops listening, ends every call with UNAVAILABLE and `details`, then
   * closes every connection at the TCP level (no GOAWAY). Idempotent.
   */
  shutdown(details = "Server is shutting down"): Promise<void> {
    this.#shutdown ??= this.#doShutdown(details);
    return this.#shutdown;
  }

  async #doShutdown(details: string): Promise<void> {
    const server = this.#server;
    const listenerClosed = server?.listening
      ? new Promise<void>((resolve) => server.close(() => resolve()))
      : Promise.resolve();
    for (const conn of this.#conns) {
      for (const call of [...conn.calls]) call.end(GrpcStatus.UNAVAILABLE, details);
    }
    await Promise.all([...this.#conns].map((c) => c.close(this.#graceMs, false)));
    await listenerClosed;
  }

  #acceptTls(socket: tls.TLSSocket): void {
    if (socket.alpnProtocol && socket.alpnProtocol !== "h2") {
      this.#log.debug("Refused a TLS connection without ALPN h2", {
        alpn: socket.alpnProtocol,
      });
      socket.destroy();
      return;
    }
    let cn: string | undefined;
    if (socket.authorized) {
      // @types/node says string; a repeated CN arrives as an array.
      const value: string | string[] | undefined = socket.getPeerCertificate()?.subject?.CN;
      cn = Array.isArray(value) ? value[0] : value;
    }
    this.#accept(socket, cn);
  }

  #accept(socket: ServerSocket, clientCN: string | undefined): void {
    socket.on("error", (err: Error) => this.#log.debug("Socket error", { error: err.message }));
    if (this.#shutdown) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const spdy = createSpdyConnection(socket, {
      protocol: "http2",
      isServer: true,
      windowSize: WINDOW_SIZE,
      maxStreams: this.#maxCalls,
    });
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const conn = new ServerConnection(socket, spdy, clientCN, remote);
    this.#conns.add(conn);
    conn.closed.then(() => this.#conns.delete(conn));
    spdy.on("error", (err: Error) => {
      this.#log.debug("HTTP/2 connection error", { peer: remote, error: err.message });
    });
    const handshake = conn.timer(
      this.#opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      () => {
        if (conn.streamsSeen === 0) {
          this.#log.debug("Connection opened no call in time", { peer: remote });
          socket.destroy();
        }
      },
    );
    spdy.on("stream", (stream: SpdyStream) => {
      conn.clearTimer(handshake);
      this.#onStream(conn, stream);
    });
    conn.onPingTimeout = () =>
      this.#log.info("Dropping a connection that does not answer PINGs", { peer: conn.remote });
    conn.keepalive(this.#opts.keepaliveMs ?? 0);
  }

  #onStream(conn: ServerConnection, stream: SpdyStream): void {
    stream.on("error", (err: Error) => {
      this.#log.debug("HTTP/2 stream error", { peer: conn.remote, error: err.message });
    });
    conn.streamsSeen++;
    const call = new GrpcServerCall(
      stream,
      conn,
      this.#opts.maxMessageSize,
      (c) => this.#callFinished(conn, c),
    );
    if (this.#shutdown || conn.closing) {
      call.refuse(this.#shutdown ? "Server is shutting down" : "Connection is closing");
      return;
    }
    // RFC 9113 section 5.1.2: a stream above the advertised limit is refused.
    // Streams we ended but the client never closed count too (a grpc-js
    // client closes them at once), so they cannot pile up.
    if (
      conn.calls.size >= this.#maxCalls ||
      spdyStreamCount(conn.spdy) > this.#maxCalls * LINGERING_STREAMS_FACTOR
    ) {
      call.refuse(`Too many concurrent calls on one connection (limit ${this.#maxCalls})`);
      return;
    }
    const contentType = call.metadata("content-type") ?? "";
    if (stream.method !== "POST" || !/^application\/grpc(\+|;|$)/.test(contentType)) {
      call.end(
        GrpcStatus.INTERNAL,
        `Not a gRPC request: method "${stream.method}", content type "${contentType}"`,
      );
      return;
    }
    const encoding = call.metadata("grpc-encoding");
    if (encoding !== undefined && encoding !== "identity") {
      call.end(
        GrpcStatus.UNIMPLEMENTED,
        `Message encoding "${encoding}" is not supported`,
        { "grpc-accept-encoding": "identity" },
      );
      return;
    }
    const handler = this.#handlers.get(call.path);
    if (!handler) {
      call.end(GrpcStatus.UNIMPLEMENTED, `Method "${call.path}" is not implemented`);
      return;
    }
    conn.calls.add(call);
    try {
      handler(call);
    } catch (err) {
      this.#log.error("gRPC handler threw", { path: call.path, error: err });
      call.end(GrpcStatus.INTERNAL, "Internal server error");
    }
  }

  #callFinished(conn: ServerConnection, call: GrpcServerCall): void {
    conn.calls.delete(call);
    // A connection without calls is closed at once (TCP, no GOAWAY): clients
    // reconnect when they need to, and an idle connection is what a GOAWAY
    // would hit on a Deno client. Shutdown closes connections itself.
    if (conn.calls.size === 0 && !this.#shutdown) {
      conn.close(this.#graceMs, true).catch((err) => {
        this.#log.debug("Closing an idle connection failed", { error: err });
      });
    }
  }
}

function toPem(v: string | Uint8Array): string | Buffer {
  return typeof v === "string" ? v : Buffer.from(v);
}
