/**
 * SPDY/3.1 upgrades of the kubelet API, the way the API server reaches a
 * kubelet for exec, attach and port-forward (it translates kubectl's
 * WebSocket to SPDY; with KUBECTL_*_WEBSOCKETS=false kubectl's own SPDY is
 * proxied through).
 *
 * The framing is spdy-transport's (with the patches in
 * aranya/spdy/spdy_patches.ts): no maintained npm library speaks
 * Kubernetes' SPDY dialect, in which streams carry only `streamtype`, `port`
 * and `requestid` headers and the peer (Go's spdystream) does no flow control.
 *
 * - Remote command (`v4.channel.k8s.io`): the client opens the error, stdin,
 *   stdout, stderr and resize streams it needs; once all expected streams
 *   arrived (within the creation timeout) the command runs; the status JSON
 *   goes on the error stream, then the connection closes.
 * - Port-forward (`portforward.k8s.io`): each forwarded connection is a pair
 *   of streams (error, data) with the same `requestid` and a `port`.
 */
import type { Buffer } from "node:buffer";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import {
  createSpdyConnection,
  openSpdySendWindow,
  type SpdyConnection,
  type SpdyStream,
} from "../spdy/spdy_patches.ts";
import { type CommandChannels, type CommandStatus, errorStatus } from "./remote_command.ts";
import { TimeoutError } from "@aranya/common/errors";
import type { StreamQuery } from "./routes.ts";
import type { ForwardChannel } from "./port_forward.ts";
import { IdleTimer, jsonLines, type StreamUpgrade, taken } from "./stream_util.ts";

/** SPDY remote command protocols served. */
export const SPDY_REMOTE_COMMAND_PROTOCOLS = ["v4.channel.k8s.io"];
/** SPDY port-forward protocol. */
export const SPDY_PORT_FORWARD_PROTOCOL = "portforward.k8s.io";

/** True when the request asks for a SPDY upgrade. */
export function isSpdyUpgrade(req: IncomingMessage): boolean {
  return (req.headers.upgrade ?? "").toLowerCase().startsWith("spdy/");
}

/** The protocols a client offers in X-Stream-Protocol-Version (several headers or a list). */
export function offeredProtocols(req: IncomingMessage): string[] {
  const raw = req.headersDistinct?.["x-stream-protocol-version"] ??
    [String(req.headers["x-stream-protocol-version"] ?? "")];
  return raw.flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
}

function accept(socket: Duplex, head: Buffer, protocol: string): SpdyConnection {
  socket.write(
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n" +
      `X-Stream-Protocol-Version: ${protocol}\r\n\r\n`,
  );
  if (head?.length) socket.unshift(head);
  const conn = createSpdyConnection(socket, { protocol: "spdy", isServer: true });
  openSpdySendWindow(conn);
  return conn;
}

/** Reads a SPDY stream as a ReadableStream (pausing the stream while the reader is behind). */
function readable(stream: SpdyStream): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(ctl) {
      stream.on("data", (chunk: Buffer) => {
        ctl.enqueue(new Uint8Array(chunk));
        if ((ctl.desiredSize ?? 1) <= 0) stream.pause();
      });
      const end = () => {
        try {
          ctl.close();
        } catch { /* closed */ }
      };
      stream.on("end", end);
      stream.on("close", end);
      stream.on("error", end);
    },
    pull() {
      stream.resume();
    },
  }, { highWaterMark: 16 });
}

function closeSoon(socket: Duplex, conn: SpdyConnection): void {
  // The client closes once it read everything; close ourselves if it does not.
  const timer = setTimeout(() => socket.destroy(), 5_000);
  conn.once("close", () => clearTimeout(timer));
  socket.once("close", () => clearTimeout(timer));
}

/**
 * Serves a remote command over SPDY: `run` is called once the expected
 * streams arrived. The socket is owned from here on.
 */
export function serveSpdyRemoteCommand(
  opts: StreamUpgrade & {
    protocol: string;
    query: StreamQuery;
    run: (channels: CommandChannels) => Promise<CommandStatus>;
  },
): void {
  const { socket, query } = opts;
  const conn = accept(socket, opts.head, opts.protocol);
  const abort = new AbortController();
  const idle = new IdleTimer(opts.timeouts.idleMs, () => {
    opts.log.info("closing an idle exec/attach connection", { idleMs: opts.timeouts.idleMs });
    socket.destroy();
  });
  socket.once("close", () => {
    idle.stop();
    abort.abort();
  });
  conn.on("error", (err) => opts.log.debug("SPDY connection error", { error: err.message }));
  const want = new Set(["error"]);
  if (query.stdin) want.add("stdin");
  if (query.stdout) want.add("stdout");
  if (query.stderr && !query.tty) want.add("stderr");
  if (query.tty) want.add("resize");
  const streams = new Map<string, SpdyStream>();
  let started = false;
  const creation = setTimeout(() => {
    if (started) return;
    const missing = [...want].filter((w) => !streams.has(w)).join(", ");
    opts.log.info("exec/attach streams did not arrive in time", { missing });
    const error = streams.get("error");
    if (error) {
      const status = errorStatus(
        new TimeoutError(`Timed out waiting for the client's streams (${missing})`),
      );
      error.write(new TextEncoder().encode(JSON.stringify(status)));
      error.end();
      closeSoon(socket, conn);
    } else socket.destroy();
  }, opts.timeouts.creationMs);
  conn.on("stream", (st) => {
    const type = String(st.headers["streamtype"] ?? "");
    st.respond(200, {});
    st.on("error", () => {});
    st.on("data", () => idle.touch());
    if (!want.has(type) || streams.has(type)) {
      // Not asked for (or a duplicate): read and ignore, as the kubelet does.
      st.resume();
      return;
    }
    streams.set(type, st);
    if (started || streams.size < want.size) return;
    started = true;
    clearTimeout(creation);
    const out = (name: string) => {
      const s = streams.get(name);
      return (data: Uint8Array) => {
        idle.touch();
        return s ? taken((done) => s.write(data, done)) : undefined;
      };
    };
    const stdin = streams.get("stdin");
    const resize = streams.get("resize");
    const channels: CommandChannels = {
      stdin: stdin ? readable(stdin) : undefined,
      stdout: out("stdout"),
      stderr: out("stderr"),
      resizes: resize ? jsonLines(readable(resize)) : undefined,
      signal: abort.signal,
    };
    opts.run(channels).then((status) => {
      streams.get("stdout")?.end();
      streams.get("stderr")?.end();
      const error = streams.get("error")!;
      error.write(new TextEncoder().encode(JSON.stringify(status)));
      error.end();
      closeSoon(socket, conn);
    });
  });
}

interface StreamPair {
  error?: SpdyStream;
  data?: SpdyStream;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Serves port-forward over SPDY: each (error, data) stream pair with one
 * `requestid` is handed to `forward`, whose resolved message (if any) goes on
 * the error stream.
 */
export function serveSpdyPortForward(
  opts: StreamUpgrade & {
    forward: (port: number, channel: ForwardChannel) => Promise<string | undefined>;
  },
): void {
  const { socket } = opts;
  const conn = accept(socket, opts.head, SPDY_PORT_FORWARD_PROTOCOL);
  const abort = new AbortController();
  const idle = new IdleTimer(opts.timeouts.idleMs, () => {
    opts.log.info("closing an idle port-forward connection", { idleMs: opts.timeouts.idleMs });
    socket.destroy();
  });
  socket.once("close", () => {
    idle.stop();
    abort.abort();
  });
  conn.on("error", (err) => opts.log.debug("SPDY connection error", { error: err.message }));
  const pairs = new Map<string, StreamPair>();
  conn.on("stream", (st) => {
    const type = String(st.headers["streamtype"] ?? "");
    const id = String(st.headers["requestid"] ?? "");
    const portText = String(st.headers["port"] ?? "");
    st.respond(200, {});
    st.on("error", () => {});
    st.on("data", () => idle.touch());
    if (type !== "error" && type !== "data") {
      st.resume();
      return;
    }
    let pair = pairs.get(id);
    if (!pair) {
      const fresh: StreamPair = {
        timer: setTimeout(() => {
          pairs.delete(id);
          fresh.error?.end();
          fresh.data?.abort();
        }, opts.timeouts.creationMs),
      };
      pairs.set(id, fresh);
      pair = fresh;
    }
    pair[type] = st;
    if (!pair.error || !pair.data) return;
    clearTimeout(pair.timer);
    pairs.delete(id);
    const { error, data } = pair;
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      error.write(new TextEncoder().encode(`Port "${portText}" is not a number in 1..65535`));
      error.end();
      data.end();
      return;
    }
    const connAbort = new AbortController();
    abort.signal.addEventListener("abort", () => connAbort.abort(), { once: true });
    data.once("close", () => connAbort.abort());
    opts.forward(port, {
      input: readable(data),
      output: (d) => {
        idle.touch();
        return taken((done) => data.write(d, done));
      },
      signal: connAbort.signal,
    }).then((message) => {
      if (message) error.write(new TextEncoder().encode(message));
      error.end();
      data.end();
    });
  });
}
