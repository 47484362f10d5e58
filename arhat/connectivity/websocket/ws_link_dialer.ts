/**
 * The websocket transport, arhat side: Deno's WebSocket with a custom
 * HttpClient (CA, client certificate), dialing `wss://<aranya>/v1/link`.
 * See aranya/connectivity/websocket/ws_link_server.ts for the handshake and
 * the keepalive rules; the keepalive interval to expect comes in aranya's
 * accept frame (LinkAccept).
 */
import {
  CanceledError,
  ProtocolError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import { CmdKind, decodeCmd, decodeReject } from "@aranya/common/envelope";
import type { Link, LinkDialer } from "@aranya/common/link";
import { BaseLink } from "@aranya/common/link_base";
import { deferred } from "@aranya/common/deferred";
import { fromBinary } from "@bufbuild/protobuf";
import { LinkAcceptSchema } from "@aranya/proto/gen/aranya/session_pb";

/** Options for {@link WebSocketLinkDialer}. */
export interface WebSocketLinkDialerOptions {
  /** e.g. "wss://aranya.example.com/v1/link". */
  url: string;
  /** "<namespace>/<name>". */
  device: string;
  token?: string;
  /** PEM: CA bundle to trust, and an optional client certificate. */
  tls?: { ca?: string; cert?: string; key?: string };
  /** Largest frame; must match aranya's (default 256 KiB + envelope). */
  maxFrameSize?: number;
  /** Handshake timeout, ms (default 15 s). */
  connectTimeoutMs?: number;
  /**
   * Aranya's keepalive interval, ms, when its accept frame does not name one
   * (default 120 s); silence for 2.5 intervals closes the link.
   */
  keepaliveMs?: number;
}

/** Send buffer above which `send` waits (bytes). */
const HIGH_WATER = 1 << 20;

class WsClientLink extends BaseLink {
  #lastHeard = Date.now();
  #watchdog: ReturnType<typeof setInterval>;

  constructor(
    device: string,
    maxFrameSize: number,
    readonly ws: WebSocket,
    readonly client: Deno.HttpClient | undefined,
    /** Aranya's keepalive interval on this link, ms. */
    readonly keepaliveMs: number,
  ) {
    super(device, "websocket", maxFrameSize);
    this.#watchdog = setInterval(() => {
      if (Date.now() - this.#lastHeard > keepaliveMs * 2.5) {
        this.markClosed("error", "aranya went silent (keepalive timed out)");
        this.shutdown("keepalive timed out");
      }
    }, Math.max(1000, keepaliveMs / 2));
    ws.onmessage = (ev) => {
      this.#lastHeard = Date.now();
      const data = new Uint8Array(ev.data as ArrayBuffer);
      if (data.byteLength === 0) {
        if (ws.readyState === WebSocket.OPEN) ws.send(data); // keepalive answer
        return;
      }
      this.deliver(data);
    };
    ws.onclose = (ev) => {
      this.#stop();
      this.markClosed(
        ev.code === 1000 || ev.code === 1001 ? "remote" : "error",
        `code ${ev.code} ${ev.reason}`.trim(),
      );
    };
  }

  #stop(): void {
    clearInterval(this.#watchdog);
    try {
      this.client?.close();
    } catch { /* closed */ }
  }

  protected async write(frame: Uint8Array): Promise<void> {
    while (this.ws.bufferedAmount > HIGH_WATER && this.ws.readyState === WebSocket.OPEN) {
      await new Promise((r) => setTimeout(r, 1));
    }
    if (this.ws.readyState !== WebSocket.OPEN) {
      throw new UnavailableError(`Link of device "${this.device}" is closed`);
    }
    this.ws.send(frame);
  }

  protected shutdown(reason: string): void {
    clearInterval(this.#watchdog);
    try {
      this.ws.close(1000, reason.slice(0, 120));
    } catch { /* closing */ }
  }
}

/** Dials aranya's websocket listener. */
export class WebSocketLinkDialer implements LinkDialer {
  readonly transport = "websocket";

  constructor(readonly opts: WebSocketLinkDialerOptions) {}

  dial(signal: AbortSignal): Promise<Link> {
    const o = this.opts;
    if (signal.aborted) return Promise.reject(new CanceledError("Dial canceled"));
    const client = o.tls
      ? Deno.createHttpClient({
        caCerts: o.tls.ca ? [o.tls.ca] : undefined,
        cert: o.tls.cert,
        key: o.tls.key,
      })
      : undefined;
    const headers: Record<string, string> = { "x-arhat-device": o.device };
    if (o.token) headers["authorization"] = `Bearer ${o.token}`;
    const result = deferred<Link>();
    let ws: WebSocket;
    try {
      ws = new WebSocket(o.url, { headers, client } as WebSocketOptions);
    } catch (err) {
      client?.close();
      return Promise.reject(
        new UnavailableError(`Cannot dial "${o.url}": ${(err as Error).message}`),
      );
    }
    ws.binaryType = "arraybuffer";
    const fail = (err: Error) => {
      if (result.settled) return;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      result.reject(err);
      try {
        ws.close();
      } catch { /* not open */ }
      client?.close();
    };
    const onAbort = () => fail(new CanceledError("Dial canceled"));
    signal.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(
      () =>
        fail(
          new UnavailableError(
            `Aranya at "${o.url}" did not accept within ${o.connectTimeoutMs ?? 15_000} ms`,
          ),
        ),
      o.connectTimeoutMs ?? 15_000,
    );
    ws.onerror = (ev) => {
      const msg = (ev as ErrorEvent).message || "connection failed";
      fail(new UnavailableError(`Cannot reach aranya at "${o.url}": ${msg}`));
    };
    ws.onclose = (ev) => {
      if (ev.code === 4401) {
        fail(new UnauthenticatedError(ev.reason || "aranya refused the credentials"));
      } else {fail(
          new UnavailableError(`Aranya at "${o.url}" closed the connection (code ${ev.code})`),
        );}
    };
    ws.onmessage = (ev) => {
      const data = new Uint8Array(ev.data as ArrayBuffer);
      if (data.byteLength === 0) return;
      let cmd;
      try {
        cmd = decodeCmd(data);
      } catch (err) {
        fail(err as Error);
        return;
      }
      if (cmd.sid === 0n && cmd.kind === CmdKind.CMD_REJECT) {
        fail(decodeReject(cmd.payload).error);
        return;
      }
      if (cmd.sid === 0n && cmd.kind === CmdKind.CMD_UNSPECIFIED && cmd.complete) {
        let keepaliveMs = o.keepaliveMs ?? 120_000;
        try {
          const seconds = fromBinary(LinkAcceptSchema, cmd.payload).keepaliveSeconds;
          if (seconds > 0) keepaliveMs = seconds * 1000;
        } catch {
          fail(new ProtocolError("Aranya's accept frame does not decode"));
          return;
        }
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        ws.onerror = null;
        result.resolve(
          new WsClientLink(
            o.device,
            o.maxFrameSize ?? 256 * 1024 + 64,
            ws,
            client,
            keepaliveMs,
          ),
        );
        return;
      }
      fail(new ProtocolError("Aranya sent a frame before accepting the link"));
    };
    return result.promise;
  }
}
