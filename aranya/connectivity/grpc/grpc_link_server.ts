/**
 * The gRPC transport's aranya side: a {@link LinkServer} on {@link GrpcServer}
 * serving `aranya.EdgeDevice/Sync`. Every Sync call is one {@link Link}:
 *
 * 1. The device names itself in metadata `x-arhat-device: <namespace>/<name>`
 *    and proves it with `authorization: Bearer <token>` or a client
 *    certificate that verified against the configured CA.
 * 2. The {@link DeviceAuthenticator} checks that before anything else: nothing
 *    the device sent is read until it passed. Failure ends the call
 *    Trailers-Only with 16 UNAUTHENTICATED (14 UNAVAILABLE when the check
 *    itself failed with anything but `UnauthenticatedError`).
 * 3. The {@link LinkRegistry} must accept the link (one per device); a second
 *    connection ends with 6 ALREADY_EXISTS.
 * 4. The server then sends the response headers at once: that is how the
 *    device learns it was accepted. Each gRPC message after that is one frame
 *    (an encoded `Msg` up, an encoded `Cmd` down).
 *
 * The link ends with the call: `link.close()` sends status 0 (OK), server
 * shutdown 14 (UNAVAILABLE), a message above `maxFrameSize` 8
 * (RESOURCE_EXHAUSTED), a malformed message (closed with a ProtocolError by
 * the session layer) 3 (INVALID_ARGUMENT); only that link closes. The device
 * half-closing or canceling closes it "remote". A connection left without
 * calls is closed at the TCP level; GOAWAY goes only to a peer that broke
 * HTTP/2 itself (see grpc_server.ts).
 */
import { ENVELOPE_OVERHEAD } from "@aranya/common/envelope";
import { CanceledError, errorMessage, UnauthenticatedError } from "@aranya/common/errors";
import { aborted, readySignal } from "@aranya/common/lifecycle";
import type {
  DeviceAuthenticator,
  DeviceCredentials,
  Link,
  LinkCloseInfo,
  LinkRegistry,
  LinkServer,
} from "@aranya/common/link";
import { BaseLink } from "@aranya/common/link_base";
import { type Logger, nullLogger } from "@aranya/common/log";
import { EdgeDevice } from "@aranya/proto/gen/aranya/rpc_pb";
import {
  type CallCloseInfo,
  type CallListener,
  GrpcServer,
  type GrpcServerCall,
  GrpcStatus,
  type GrpcStatusCode,
} from "./grpc_server.ts";

/** The Sync method's path, from the proto: "/aranya.EdgeDevice/Sync". */
export const SYNC_PATH = `/${EdgeDevice.typeName}/${EdgeDevice.method.sync.name}`;

/** Metadata naming the device ("<namespace>/<name>"); arhat's dialer sends it. */
export const DEVICE_METADATA = "x-arhat-device";

/** Default largest frame: a 64 KiB payload plus its envelope. */
export const DEFAULT_GRPC_MAX_FRAME_SIZE = 64 * 1024 + ENVELOPE_OVERHEAD;

/** "<namespace>/<name>": a DNS label, then a DNS subdomain. */
const DEVICE_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\/[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$/;

/** TLS settings of {@link GrpcLinkServer}. */
export interface GrpcLinkServerTls {
  /** PEM serving certificate chain. */
  cert: string | Uint8Array;
  /** PEM private key. */
  key: string | Uint8Array;
  /** PEM CA that device client certificates chain to. */
  ca?: string | Uint8Array;
  /** Ask devices for a client certificate (a verified one authenticates like a token). */
  requestCert?: boolean;
}

/** Options of {@link GrpcLinkServer}. */
export interface GrpcLinkServerOptions {
  /** Address to listen on (default "0.0.0.0"). */
  hostname?: string;
  /** Port; 0 picks a free one, readable from {@link GrpcLinkServer.port} once ready. */
  port: number;
  /** Serve TLS (ALPN h2); without it, h2c. */
  tls?: GrpcLinkServerTls;
  authenticator: DeviceAuthenticator;
  registry: LinkRegistry;
  /** Largest frame either way (default {@link DEFAULT_GRPC_MAX_FRAME_SIZE}). */
  maxFrameSize?: number;
  /** Concurrent calls per TCP connection (default 4; a device needs one). */
  maxCallsPerConnection?: number;
  /**
   * PING interval to find dead connections; 0 turns it off. Default 240 s: each PING costs five
   * packets (PING, PING ACK, TCP ACKs), about 430 bytes with TLS, so an idle link costs 155 KB a
   * day; a dead link is found within two intervals.
   */
  keepaliveMs?: number;
  /** A device's own PING interval, ms (its EdgeDevice's timers); undefined: `keepaliveMs`. */
  keepaliveFor?: (device: string) => number | undefined;
  log?: Logger;
}

/** The aranya side of the gRPC transport. Construction does no I/O. */
export class GrpcLinkServer implements LinkServer {
  readonly transport = "grpc";
  readonly #opts: GrpcLinkServerOptions;
  readonly #log: Logger;
  readonly #maxFrameSize: number;
  readonly #ready = readySignal();
  #port = 0;
  #running = false;

  constructor(opts: GrpcLinkServerOptions) {
    this.#opts = opts;
    this.#log = (opts.log ?? nullLogger).with({ transport: "grpc" });
    this.#maxFrameSize = opts.maxFrameSize ?? DEFAULT_GRPC_MAX_FRAME_SIZE;
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** The bound port once {@link ready} resolved (0 before). */
  get port(): number {
    return this.#port;
  }

  /** The largest frame either way. */
  get maxFrameSize(): number {
    return this.#maxFrameSize;
  }

  /**
   * Serves until `signal` aborts, then ends every call with 14 (UNAVAILABLE),
   * closes the connections and the listener, and resolves. Rejects (and
   * `ready` rejects) only when the address cannot be bound. Call once.
   */
  async run(signal: AbortSignal, onLink: (link: Link) => void): Promise<void> {
    if (this.#running) throw new Error("GrpcLinkServer.run was called twice");
    this.#running = true;
    if (signal.aborted) {
      this.#ready.reject(new CanceledError("gRPC link server stopped before it started"));
      return;
    }
    const hostname = this.#opts.hostname ?? "0.0.0.0";
    const server = new GrpcServer({
      hostname,
      port: this.#opts.port,
      tls: this.#opts.tls,
      maxMessageSize: this.#maxFrameSize,
      maxCallsPerConnection: this.#opts.maxCallsPerConnection ?? 4,
      keepaliveMs: this.#opts.keepaliveMs ?? 240_000,
      log: this.#log,
    }, {
      [SYNC_PATH]: (call) =>
        this.#sync(call, signal, onLink).catch((err) => {
          this.#log.error("Sync call failed", {
            device: call.metadata(DEVICE_METADATA),
            error: err,
          });
          call.end(GrpcStatus.INTERNAL, "Internal error in aranya");
        }),
    });
    try {
      this.#port = await server.listen();
    } catch (err) {
      const e = new Error(
        `gRPC link server cannot listen on "${hostname}:${this.#opts.port}": ${errorMessage(err)}`,
        { cause: err },
      );
      this.#ready.reject(e);
      throw e;
    }
    this.#log.info("gRPC link server listening", {
      address: `${hostname}:${this.#port}`,
      tls: this.#opts.tls !== undefined,
    });
    this.#ready.resolve();
    await aborted(signal);
    await server.shutdown("aranya is shutting down");
    this.#log.info("gRPC link server stopped", { port: this.#port });
  }

  async #sync(call: GrpcServerCall, signal: AbortSignal, onLink: (link: Link) => void) {
    const device = call.metadata(DEVICE_METADATA) ?? "";
    const log = this.#log.with({ device, peer: call.peer });
    if (!DEVICE_RE.test(device)) {
      log.info("Refused a Sync call without a valid device name");
      call.end(
        GrpcStatus.UNAUTHENTICATED,
        `Metadata "${DEVICE_METADATA}" must name the device as "<namespace>/<name>", got "${device}"`,
      );
      return;
    }
    const credentials: DeviceCredentials = {};
    const auth = call.metadata("authorization");
    const bearer = auth === undefined ? undefined : /^bearer\s+(\S+)\s*$/i.exec(auth);
    if (bearer) credentials.token = bearer[1];
    if (call.clientCertificateCN !== undefined) {
      credentials.certificateCN = call.clientCertificateCN;
    }
    try {
      await this.#opts.authenticator.authenticate(device, credentials);
    } catch (err) {
      if (err instanceof UnauthenticatedError) {
        log.info("Refused a device that failed authentication", { error: err.message });
        call.end(GrpcStatus.UNAUTHENTICATED, err.message);
      } else {
        // The check itself failed (for example, the API server is down): the
        // device should retry later, not doubt its credentials.
        log.warn("Could not authenticate a device", { error: errorMessage(err) });
        call.end(
          GrpcStatus.UNAVAILABLE,
          `aranya cannot check the credentials of device "${device}" now`,
        );
      }
      return;
    }
    if (call.isClosed) return;
    if (signal.aborted) {
      call.end(GrpcStatus.UNAVAILABLE, "aranya is shutting down");
      return;
    }
    const link = new GrpcServerLink(device, this.#maxFrameSize, call);
    if (!this.#opts.registry.claim(link)) {
      log.info("Refused a second connection of a connected device");
      call.end(GrpcStatus.ALREADY_EXISTS, `Device "${device}" is already connected`);
      return;
    }
    const keepaliveMs = this.#opts.keepaliveFor?.(device);
    if (keepaliveMs !== undefined) call.setKeepalive(keepaliveMs);
    call.sendHeaders();
    call.start(link);
    log.info("Device connected");
    link.closed.then((info) =>
      log.info("Device disconnected", { by: info.by, reason: info.reason })
    );
    try {
      onLink(link);
    } catch (err) {
      log.error("onLink threw; closing the link", { error: err });
      link.close("Internal error in aranya");
    }
  }
}

/** One Sync call seen as a {@link Link}. */
class GrpcServerLink extends BaseLink implements CallListener {
  readonly #call: GrpcServerCall;

  constructor(device: string, maxFrameSize: number, call: GrpcServerCall) {
    super(device, "grpc", maxFrameSize);
    this.#call = call;
  }

  onMessage(message: Uint8Array): void {
    this.deliver(message);
  }

  onHalfClose(): void {
    // The device sent everything it will send: end the call cleanly.
    this.markClosed("remote", "Device closed its stream");
    this.#call.end(GrpcStatus.OK, "Device closed its stream");
  }

  onClose(info: CallCloseInfo): void {
    // A call this side ended with an error status (oversized or malformed
    // message) was the device's fault: the link closed "error".
    const by: LinkCloseInfo["by"] = info.by !== "local"
      ? info.by
      : info.code === GrpcStatus.OK || info.code === GrpcStatus.UNAVAILABLE
      ? "local"
      : "error";
    this.markClosed(by, info.details || `Call ended with status ${info.code}`);
  }

  protected write(frame: Uint8Array): Promise<void> {
    return this.#call.write(frame);
  }

  protected shutdown(reason: string, fault?: "protocol"): void {
    // BaseLink shuts down with "oversized frame" after markClosed("error"); a malformed frame
    // (the session layer's ProtocolError) is the device's error too.
    const code: GrpcStatusCode = reason === "oversized frame"
      ? GrpcStatus.RESOURCE_EXHAUSTED
      : fault === "protocol"
      ? GrpcStatus.INVALID_ARGUMENT
      : GrpcStatus.OK;
    this.#call.end(code, reason);
  }
}
