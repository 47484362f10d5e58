/**
 * The websocket transport, aranya side: ONE TLS listener for all devices
 * (node:https, because Deno.serve cannot verify client certificates, plus npm
 * `ws`), reachable through any Ingress.
 *
 * Handshake: the device opens `wss://<aranya>/v1/link` with the headers
 * `X-Arhat-Device: <namespace>/<name>` and `Authorization: Bearer <token>`
 * (or a client certificate). After the upgrade aranya authenticates it and
 * claims the device in the registry; then it sends the accept frame (an empty
 * binary message is a keepalive, so the accept frame is a sid-0 Cmd with kind
 * CMD_UNSPECIFIED and `complete` set, its payload a LinkAccept naming the
 * link's keepalive interval). On failure it sends CMD_REJECT and
 * closes with code 4401 (unauthenticated), 4409 (already connected) or 4400;
 * nothing the device sent is delivered.
 *
 * Keepalive: every `keepaliveMs` (per device: `keepaliveFor`) aranya sends an
 * empty binary message; the device answers with one. A side that hears
 * nothing for 2.5 intervals closes the link, so a silently dead NAT mapping is
 * noticed on both ends. A keepalive and its answer cost about 250 bytes on the
 * wire with TLS and TCP (176 KB/day at 2 minutes, docs/link.md).
 */
import https from "node:https";
import http from "node:http";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import { Buffer } from "node:buffer";
import { WebSocket, WebSocketServer } from "ws";
import { AlreadyExistsError, errorMessage, ProtocolError } from "@aranya/common/errors";
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind, encodeCmd, rejectFrame } from "@aranya/common/envelope";
import { LinkAcceptSchema } from "@aranya/proto/gen/aranya/session_pb";
import type {
  DeviceAuthenticator,
  DeviceCredentials,
  Link,
  LinkRegistry,
  LinkServer,
} from "@aranya/common/link";
import { BaseLink } from "@aranya/common/link_base";
import { guardConnections } from "@aranya/common/connection_guard";
import { type Logger, nullLogger } from "@aranya/common/log";
import { readySignal } from "@aranya/common/lifecycle";

/** Default path of the link endpoint. */
export const WS_LINK_PATH = "/v1/link";
/** Default largest frame: 256 KiB of payload plus the envelope. */
export const WS_MAX_FRAME = 256 * 1024 + 64;

/** Most frames, and bytes, a connection may send before it is accepted (devices send none). */
const EARLY_FRAMES = 4;
const EARLY_BYTES = 64 * 1024;

/** Options for {@link WebSocketLinkServer}. */
export interface WebSocketLinkServerOptions {
  hostname?: string;
  /** 0 picks a free port; read `port` after `ready`. */
  port: number;
  /** PEM material. Without it the server speaks plain HTTP (only behind a TLS-terminating proxy). */
  tls?: { cert: string; key: string; ca?: string; requestCert?: boolean };
  path?: string;
  authenticator: DeviceAuthenticator;
  registry: LinkRegistry;
  maxFrameSize?: number;
  /** Keepalive interval, ms (default 120 s). */
  keepaliveMs?: number;
  /** A device's own keepalive interval, ms (its EdgeDevice's timers); undefined: `keepaliveMs`. */
  keepaliveFor?: (device: string) => number | undefined;
  /** Most open connections from one remote address (default 256: a site of devices behind one NAT). */
  maxConnectionsPerAddress?: number;
  log?: Logger;
}

/** The accept frame telling the device the link's keepalive interval (see module doc). */
export function acceptFrame(keepaliveMs: number): Uint8Array {
  return encodeCmd({
    kind: CmdKind.CMD_UNSPECIFIED,
    sid: 0n,
    seq: 0n,
    complete: true,
    payload: toBinary(
      LinkAcceptSchema,
      create(LinkAcceptSchema, { keepaliveSeconds: Math.max(1, Math.round(keepaliveMs / 1000)) }),
    ),
  });
}

class WsServerLink extends BaseLink {
  #lastHeard = Date.now();
  #keepalive?: ReturnType<typeof setInterval>;

  constructor(device: string, maxFrameSize: number, readonly ws: WebSocket) {
    super(device, "websocket", maxFrameSize);
  }

  heard(): void {
    this.#lastHeard = Date.now();
  }

  get lastHeard(): number {
    return this.#lastHeard;
  }

  receive(data: Uint8Array): void {
    this.deliver(data);
  }

  remoteClosed(by: "remote" | "error", reason: string): void {
    this.stopKeepalive();
    this.markClosed(by, reason);
  }

  /** Sends a keepalive every `ms`; closes the link after 2.5 intervals without a word. */
  startKeepalive(ms: number): void {
    this.#keepalive = setInterval(() => {
      if (Date.now() - this.#lastHeard > ms * 2.5) {
        this.remoteClosed("error", "keepalive timed out");
        this.ws.terminate();
        return;
      }
      this.ws.send(new Uint8Array(0), { binary: true }, () => {});
    }, ms);
  }

  stopKeepalive(): void {
    clearInterval(this.#keepalive);
  }

  protected write(frame: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.ws.send(frame, { binary: true }, (err) => err ? reject(err) : resolve());
    });
  }

  protected shutdown(reason: string, fault?: "protocol"): void {
    this.stopKeepalive();
    try {
      // 1002: the endpoint is closing because of a protocol error (RFC 6455 section 7.4.1).
      this.ws.close(fault === "protocol" ? 1002 : 1000, reason.slice(0, 120));
    } catch { /* already closing */ }
    setTimeout(() => this.ws.terminate(), 2000).unref?.();
  }
}

/** aranya's websocket listener for all devices. */
export class WebSocketLinkServer implements LinkServer {
  readonly transport = "websocket";
  readonly #opts: WebSocketLinkServerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  #port = 0;

  constructor(opts: WebSocketLinkServerOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? nullLogger;
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** The bound port (after `ready`). */
  get port(): number {
    return this.#port;
  }

  async run(signal: AbortSignal, onLink: (link: Link) => void): Promise<void> {
    const o = this.#opts;
    const path = o.path ?? WS_LINK_PATH;
    const maxFrame = o.maxFrameSize ?? WS_MAX_FRAME;
    const links = new Set<WsServerLink>();
    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: maxFrame,
      perMessageDeflate: false,
    });
    const server = o.tls
      ? https.createServer({
        cert: o.tls.cert,
        key: o.tls.key,
        ca: o.tls.ca,
        requestCert: o.tls.requestCert ?? false,
        rejectUnauthorized: false, // unauthenticated certs fall back to token auth below
        handshakeTimeout: 10_000,
      })
      : http.createServer();
    // Bounded before authentication: at most `maxConnectionsPerAddress` connections from one
    // address, and each must complete its TLS handshake and upgrade within 10 s.
    guardConnections(server, {
      perAddress: o.maxConnectionsPerAddress ?? 256,
      firstRequestMs: 10_000,
      tls: o.tls !== undefined,
    });
    server.on("request", (_req, res) => {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end(`Not found; devices connect to ${path} with a WebSocket upgrade\n`);
    });
    server.on("clientError", (_err, socket) => socket.destroy());
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on("error", () => {});
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname !== path) {
        socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n");
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        this.#accept(ws, req, maxFrame, links, onLink).catch((err) => {
          this.#log.error("websocket accept failed", { error: errorMessage(err) });
          ws.terminate();
        });
      });
    });

    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(o.port, o.hostname ?? "0.0.0.0", () => {
        server.off("error", reject);
        resolve();
      });
    }).catch((err) => {
      this.#ready.reject(err);
      throw err;
    });
    this.#port = (server.address() as { port: number }).port;
    this.#log.info("websocket link server listening", { port: this.#port, path });
    this.#ready.resolve();

    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener("abort", () => resolve(), { once: true });
    });
    for (const l of links) l.close("aranya is shutting down");
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    wss.close();
    this.#log.info("websocket link server stopped", { port: this.#port });
  }

  async #accept(
    ws: WebSocket,
    req: IncomingMessage,
    maxFrame: number,
    links: Set<WsServerLink>,
    onLink: (link: Link) => void,
  ): Promise<void> {
    ws.on("error", () => {});
    // Hold what arrives during authentication; nothing is delivered unless accepted,
    // and then it goes through the same checks as everything after.
    const early: { bytes: Uint8Array; isBinary: boolean }[] = [];
    let earlyBytes = 0;
    const accepted: { link?: WsServerLink } = {};
    const handle = (link: WsServerLink, bytes: Uint8Array, isBinary: boolean) => {
      link.heard();
      if (!isBinary) {
        link.remoteClosed("error", "text message on a binary link");
        ws.close(4400, "text messages are not allowed");
        return;
      }
      if (bytes.byteLength === 0) return; // keepalive answer
      link.receive(bytes);
    };
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      if (accepted.link) handle(accepted.link, bytes, isBinary);
      else if (early.length < EARLY_FRAMES && earlyBytes + bytes.byteLength <= EARLY_BYTES) {
        earlyBytes += bytes.byteLength;
        early.push({ bytes: bytes.slice(), isBinary });
      } else {
        // A device sends nothing before it is accepted; this is a flood.
        ws.terminate();
      }
    });
    const device = String(req.headers["x-arhat-device"] ?? "");
    const auth = String(req.headers["authorization"] ?? "");
    const credentials: DeviceCredentials = {};
    if (auth.toLowerCase().startsWith("bearer ")) credentials.token = auth.slice(7).trim();
    const sock = req.socket as TLSSocket;
    if (typeof sock.getPeerCertificate === "function" && sock.authorized) {
      const cn = sock.getPeerCertificate()?.subject?.CN;
      if (typeof cn === "string") credentials.certificateCN = cn;
    }
    const reject = (err: Error, code: number) => {
      this.#log.warn("device link rejected", { device, reason: err.message });
      ws.send(rejectFrame(err), { binary: true }, () => ws.close(code, err.message.slice(0, 120)));
      setTimeout(() => ws.terminate(), 2000);
    };
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/.test(device)) {
      reject(
        new ProtocolError(`Header "X-Arhat-Device" must be "<namespace>/<name>", got "${device}"`),
        4400,
      );
      return;
    }
    try {
      await this.#opts.authenticator.authenticate(device, credentials);
    } catch (err) {
      reject(err instanceof Error ? err : new Error(String(err)), 4401);
      return;
    }
    if (ws.readyState !== WebSocket.OPEN) return;
    const l = new WsServerLink(device, maxFrame, ws);
    if (!this.#opts.registry.claim(l)) {
      reject(new AlreadyExistsError(`Device "${device}" is already connected`), 4409);
      return;
    }
    links.add(l);
    ws.on("close", (code: number, reason: Buffer) => {
      links.delete(l);
      l.remoteClosed(
        code === 1000 || code === 1001 ? "remote" : "error",
        `code ${code} ${reason}`.trim(),
      );
    });
    const keepaliveMs = this.#opts.keepaliveFor?.(device) ?? this.#opts.keepaliveMs ?? 120_000;
    ws.send(acceptFrame(keepaliveMs), { binary: true });
    l.startKeepalive(keepaliveMs);
    accepted.link = l;
    this.#log.info("device connected", { device, transport: "websocket" });
    onLink(l);
    for (const f of early) handle(l, f.bytes, f.isBinary);
  }
}
