/**
 * WebSocket upgrades of the kubelet API for direct callers (the API server
 * itself uses SPDY, see spdy_upgrade.ts). Built on npm `ws`, which owns the
 * WebSocket framing; the channel protocols on top are ours.
 *
 * - Remote command, `v5.channel.k8s.io` down to `channel.k8s.io`: every
 *   frame's first byte is a channel: 0 stdin, 1 stdout, 2 stderr, 3 status
 *   (v4 and v5: the JSON status; older: a failure's text only; then the
 *   socket closes), 4 terminal size (JSON). v5 adds the frame [255, channel]
 *   that closes a channel (stdin EOF).
 * - Port-forward, `portforward.k8s.io` or `v4.channel.k8s.io` (or none), one
 *   connection per `ports` entry: data on channel 2i, errors on 2i+1; the
 *   first frame the server sends on each channel carries the port as two
 *   little-endian bytes.
 */
import type { Buffer } from "node:buffer";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type WebSocket, WebSocketServer } from "ws";
import { concatBytes } from "@aranya/common/bytes";
import type { CommandChannels, CommandStatus } from "./remote_command.ts";
import type { ForwardChannel } from "./port_forward.ts";
import type { StreamQuery } from "./routes.ts";
import { IdleTimer, type StreamUpgrade, taken, terminalSize } from "./stream_util.ts";

/**
 * WebSocket remote command protocols, preferred first. The older ones (v3,
 * v2, and the first, `channel.k8s.io`) frame the same way but end without a
 * JSON status: a failure's message goes on channel 3 as plain text, success
 * sends nothing there (clients such as the e2e framework still use them).
 */
export const WS_REMOTE_COMMAND_PROTOCOLS = [
  "v5.channel.k8s.io",
  "v4.channel.k8s.io",
  "v3.channel.k8s.io",
  "v2.channel.k8s.io",
  "channel.k8s.io",
];
/** WebSocket port-forward protocols, preferred first ("" = no subprotocol). */
export const WS_PORT_FORWARD_PROTOCOLS = ["portforward.k8s.io", "v4.channel.k8s.io", ""];

const CLOSE_CHANNEL = 255;

/** True when the request asks for a WebSocket upgrade. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  return (req.headers.upgrade ?? "").toLowerCase() === "websocket";
}

/** The subprotocols a client offers. */
export function offeredSubprotocols(req: IncomingMessage): string[] {
  return String(req.headers["sec-websocket-protocol"] ?? "").split(",").map((s) => s.trim())
    .filter(Boolean);
}

/** One `ws` server (no listener of its own) per chosen subprotocol; it answers with that one. */
const servers = new Map<string, WebSocketServer>();

function upgrade(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  protocol: string,
): Promise<WebSocket> {
  let wss = servers.get(protocol);
  if (!wss) {
    wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: 16 << 20,
      handleProtocols: () => protocol || false,
    });
    servers.set(protocol, wss);
  }
  const server = wss;
  return new Promise((resolve) => server.handleUpgrade(req, socket, head, (ws) => resolve(ws)));
}

function frame(channel: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.byteLength + 1);
  out[0] = channel;
  out.set(data, 1);
  return out;
}

function asBytes(data: Buffer | ArrayBuffer | Buffer[]): Uint8Array {
  if (Array.isArray(data)) return concatBytes(data);
  return data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data);
}

/** Serves a remote command over WebSocket with `protocol` (one of WS_REMOTE_COMMAND_PROTOCOLS). */
export async function serveWebSocketRemoteCommand(
  opts: StreamUpgrade & {
    req: IncomingMessage;
    protocol: string;
    query: StreamQuery;
    run: (channels: CommandChannels) => Promise<CommandStatus>;
  },
): Promise<void> {
  const ws = await upgrade(opts.req, opts.socket, opts.head, opts.protocol);
  const v5 = opts.protocol === "v5.channel.k8s.io";
  const abort = new AbortController();
  const idle = new IdleTimer(opts.timeouts.idleMs, () => ws.terminate());
  let stdinCtl: ReadableStreamDefaultController<Uint8Array> | undefined;
  const stdin = opts.query.stdin
    ? new ReadableStream<Uint8Array>({ start: (c) => void (stdinCtl = c) })
    : undefined;
  const closeStdin = () => {
    try {
      stdinCtl?.close();
    } catch { /* closed */ }
  };
  const sizes: ((s: { cols: number; rows: number } | undefined) => void)[] = [];
  const sizeQueue: { cols: number; rows: number }[] = [];
  let sizesDone = false;
  async function* resizes() {
    for (;;) {
      const next = sizeQueue.shift() ??
        (sizesDone ? undefined : await new Promise<{ cols: number; rows: number } | undefined>((
          r,
        ) => sizes.push(r)));
      if (!next) return;
      yield next;
    }
  }
  const pushSize = (s: { cols: number; rows: number } | undefined) => {
    const waiter = sizes.shift();
    if (waiter) waiter(s);
    else if (s) sizeQueue.push(s);
  };
  ws.on("message", (raw: Buffer | ArrayBuffer | Buffer[]) => {
    idle.touch();
    const data = asBytes(raw);
    if (data.byteLength === 0) return;
    const channel = data[0]!;
    const body = data.subarray(1);
    if (channel === 0) {
      if (body.byteLength) stdinCtl?.enqueue(body.slice());
    } else if (channel === 4) {
      pushSize(terminalSize(new TextDecoder().decode(body)));
    } else if (v5 && channel === CLOSE_CHANNEL && body[0] === 0) {
      closeStdin();
    }
  });
  ws.on("close", () => {
    idle.stop();
    closeStdin();
    sizesDone = true;
    pushSize(undefined);
    abort.abort();
  });
  ws.on("error", (err: Error) => opts.log.debug("WebSocket error", { error: err.message }));
  const send = (channel: number) => (data: Uint8Array) => {
    idle.touch();
    return sent(ws, frame(channel, data));
  };
  const status = await opts.run({
    stdin,
    stdout: send(1),
    stderr: send(2),
    resizes: opts.query.tty ? resizes() : undefined,
    signal: abort.signal,
  });
  if (v5 || opts.protocol === "v4.channel.k8s.io") {
    send(3)(new TextEncoder().encode(JSON.stringify(status)));
  } else if (status.status !== "Success") {
    send(3)(new TextEncoder().encode(status.message ?? "command failed"));
  }
  sizesDone = true;
  pushSize(undefined);
  ws.close(1000);
}

/** Sends one message; resolves when `ws` has written it ({@link taken}), at once when it is not open. */
function sent(ws: WebSocket, message: Uint8Array): Promise<void> | undefined {
  return ws.readyState === ws.OPEN ? taken((done) => ws.send(message, done)) : undefined;
}

/** Serves port-forward over WebSocket: one connection per port in `ports`. */
export async function serveWebSocketPortForward(
  opts: StreamUpgrade & {
    req: IncomingMessage;
    protocol: string;
    ports: number[];
    forward: (port: number, channel: ForwardChannel) => Promise<string | undefined>;
  },
): Promise<void> {
  const ws = await upgrade(opts.req, opts.socket, opts.head, opts.protocol);
  const abort = new AbortController();
  const idle = new IdleTimer(opts.timeouts.idleMs, () => ws.terminate());
  const inputs = opts.ports.map(() => {
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const stream = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
    return { stream, ctl };
  });
  ws.on("message", (raw: Buffer | ArrayBuffer | Buffer[]) => {
    idle.touch();
    const data = asBytes(raw);
    if (data.byteLength < 1) return;
    const channel = data[0]!;
    if (channel % 2 !== 0) return;
    const input = inputs[channel / 2];
    if (input && data.byteLength > 1) input.ctl.enqueue(data.slice(1));
  });
  ws.on("close", () => {
    idle.stop();
    for (const i of inputs) {
      try {
        i.ctl.close();
      } catch { /* closed */ }
    }
    abort.abort();
  });
  ws.on("error", (err: Error) => opts.log.debug("WebSocket error", { error: err.message }));
  const send = (channel: number, data: Uint8Array) => {
    idle.touch();
    return sent(ws, frame(channel, data));
  };
  await Promise.all(opts.ports.map(async (port, i) => {
    const prefix = new Uint8Array([port & 0xff, port >> 8]);
    send(2 * i, prefix);
    send(2 * i + 1, prefix);
    const message = await opts.forward(port, {
      input: inputs[i]!.stream,
      output: (d) => send(2 * i, d),
      signal: abort.signal,
    });
    if (message) send(2 * i + 1, new TextEncoder().encode(message));
  }));
  ws.close(1000);
}
