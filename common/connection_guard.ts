/**
 * Bounds what unauthenticated callers can hold on a listener: at most
 * `perAddress` connections from one remote address that have not completed
 * their first request yet (more are closed at once), and a connection that has
 * not completed its first request (its headers, or a WebSocket upgrade) within
 * `firstRequestMs` is closed. Connections past their first request (a device's
 * authenticated link, the API server's kubelet streams) do not count: behind
 * an Ingress or a NAT a whole fleet arrives from a few addresses. On a TLS
 * server the clock starts once the handshake is done (bound the handshake with
 * the server's `handshakeTimeout`). Hand-written because Deno's node:http does not enforce
 * `headersTimeout`/`requestTimeout` (checked on Deno 2.9: a half-sent request
 * is kept open forever), and node:http has no per-address limit.
 *
 * @module
 */
import type { Server as HttpServer } from "node:http";
import type { Server as NetServer, Socket } from "node:net";

/** Options of {@link guardConnections}. */
export interface ConnectionGuardOptions {
  /** Most connections from one remote address before their first request (default 256). */
  perAddress?: number;
  /** Time from accept (TLS: from the handshake) to the first request or upgrade, ms (default 10 s; 0: no limit). */
  firstRequestMs?: number;
  /** The server is a TLS server (its requests arrive on the TLS socket, not the TCP one). */
  tls?: boolean;
}

/** What a guard counted. */
export interface ConnectionGuard {
  /** Connections closed for exceeding the per-address limit. */
  readonly refused: number;
  /** Connections closed for not sending a request in time. */
  readonly timedOut: number;
  /** Marks `socket` as past its first request (call for servers without HTTP requests). */
  settle(socket: Socket): void;
}

/**
 * Guards `server` (a node:net, node:tls, node:http or node:https server; for
 * HTTP servers, requests and upgrades settle a connection by themselves).
 */
export function guardConnections(
  server: NetServer | HttpServer,
  opts: ConnectionGuardOptions = {},
): ConnectionGuard {
  const perAddress = opts.perAddress ?? 256;
  const firstMs = opts.firstRequestMs ?? 10_000;
  /** Unsettled connections per remote address. */
  const open = new Map<string, number>();
  /**
   * Unsettled connections by "<address>|<port>": the TCP socket (connection) and, on a TLS
   * server, the TLS socket (requests) are different objects for one connection.
   */
  const unsettled = new Set<string>();
  const timers = new WeakMap<Socket, ReturnType<typeof setTimeout>>();
  const stats = { refused: 0, timedOut: 0 };
  const keyOf = (socket: Socket) => `${socket.remoteAddress ?? ""}|${socket.remotePort ?? ""}`;
  const release = (key: string, addr: string) => {
    if (!unsettled.delete(key)) return;
    const left = (open.get(addr) ?? 1) - 1;
    if (left <= 0) open.delete(addr);
    else open.set(addr, left);
  };
  const settle = (socket: Socket) => {
    const t = timers.get(socket);
    if (t !== undefined) clearTimeout(t);
    timers.delete(socket);
    release(keyOf(socket), socket.remoteAddress ?? "");
  };
  const deadline = (socket: Socket) => {
    if (firstMs <= 0) return;
    timers.set(
      socket,
      setTimeout(() => {
        stats.timedOut++;
        socket.destroy();
      }, firstMs),
    );
    socket.once("close", () => settle(socket));
  };
  server.on("connection", (socket: Socket) => {
    const addr = socket.remoteAddress ?? "";
    const n = (open.get(addr) ?? 0) + 1;
    if (n > perAddress) {
      stats.refused++;
      socket.destroy();
      return;
    }
    open.set(addr, n);
    const key = keyOf(socket);
    unsettled.add(key);
    socket.once("close", () => release(key, addr));
    if (!opts.tls) deadline(socket);
  });
  if (opts.tls) server.on("secureConnection", deadline);
  const onRequest = (req: { socket: Socket }) => settle(req.socket);
  server.on("request", onRequest);
  server.on("upgrade", onRequest);
  return {
    get refused() {
      return stats.refused;
    },
    get timedOut() {
      return stats.timedOut;
    },
    settle,
  };
}
