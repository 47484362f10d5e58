/**
 * The gRPC transport's device side: a {@link LinkDialer} on @grpc/grpc-js
 * that opens one `aranya.EdgeDevice/Sync` call and keeps it open as the link.
 * Messages stay raw bytes (identity serializers): an encoded `Msg` up, an
 * encoded `Cmd` down, one frame per gRPC message.
 *
 * Acceptance: aranya sends the call's response headers as soon as the device
 * passed authentication and the registry accepted it, so `dial` resolves on
 * the `metadata` event. A status before that is a refusal: 16 UNAUTHENTICATED
 * -> `UnauthenticatedError`, 6 ALREADY_EXISTS -> `AlreadyExistsError`, and 14
 * UNAVAILABLE or a connection failure -> `UnavailableError`.
 *
 * Deno specifics (docs/grpc-on-deno.md, "The dialer"): the grpc-js client runs
 * on Deno's `node:http2`, which can abort the process when a GOAWAY hits an
 * idle connection (denoland/deno#36788). aranya sends GOAWAY only to a peer
 * that broke HTTP/2; on top of
 * that the Sync call stays open for the link's lifetime (the connection is
 * never idle), `grpc.client_idle_timeout_ms` makes the client drop an idle
 * channel itself, and each dial uses its own channel, closed with the link.
 * Over TLS, dial a host name ("localhost"), not an IP: Deno rejects an IP as
 * TLS `servername`.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { ENVELOPE_OVERHEAD } from "@aranya/common/envelope";
import {
  AlreadyExistsError,
  type AranyaError,
  CanceledError,
  ForbiddenError,
  InvalidInputError,
  NotSupportedError,
  ProtocolError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { Link, LinkDialer } from "@aranya/common/link";
import { BaseLink } from "@aranya/common/link_base";
import { type Logger, nullLogger } from "@aranya/common/log";
import { EdgeDevice } from "@aranya/proto/gen/aranya/rpc_pb";

/** The Sync method's path, from the proto: "/aranya.EdgeDevice/Sync". */
export const SYNC_PATH = `/${EdgeDevice.typeName}/${EdgeDevice.method.sync.name}`;

/** Metadata naming the device; aranya's GrpcLinkServer reads it. */
export const DEVICE_METADATA = "x-arhat-device";

/** Default largest frame; the same as aranya's GrpcLinkServer default (64 KiB + envelope). */
export const DEFAULT_GRPC_MAX_FRAME_SIZE = 64 * 1024 + ENVELOPE_OVERHEAD;

/** TLS settings of {@link GrpcLinkDialer}. */
export interface GrpcLinkDialerTls {
  /** PEM CA that aranya's serving certificate chains to (default: the system's CAs). */
  ca?: string | Uint8Array;
  /** PEM client certificate (with `key`): authenticates the device instead of a token. */
  cert?: string | Uint8Array;
  /** PEM private key of `cert`. */
  key?: string | Uint8Array;
  /** Name to verify aranya's certificate against (default: the target's host). */
  serverName?: string;
}

/** Options of {@link GrpcLinkDialer}. */
export interface GrpcLinkDialerOptions {
  /** aranya's gRPC address, "host:port". Over TLS use a host name, not an IP (see the module doc). */
  target: string;
  /** The device, "<namespace>/<name>". */
  device: string;
  /** Bearer token; may be omitted when a client certificate authenticates the device. */
  token?: string;
  /** TLS; without it the dialer speaks h2c. */
  tls?: GrpcLinkDialerTls;
  /** Largest frame either way (default {@link DEFAULT_GRPC_MAX_FRAME_SIZE}). */
  maxFrameSize?: number;
  /** How long `dial` waits for aranya to accept the call (default 10000 ms). */
  acceptTimeoutMs?: number;
  /** HTTP/2 PING interval to notice a dead connection; 0 (default) turns it off. */
  keepaliveMs?: number;
  log?: Logger;
}

/** Keeps grpc-js from holding an idle channel (and from ever idling into a GOAWAY). */
const CLIENT_IDLE_TIMEOUT_MS = 1_000;
/** How long a local close waits for aranya's status before canceling the call. */
const CLOSE_TIMEOUT_MS = 2_000;

const identity = (b: Buffer): Buffer => b;

/** The device side of the gRPC transport. Construction does no I/O. */
export class GrpcLinkDialer implements LinkDialer {
  readonly transport = "grpc";
  readonly #opts: GrpcLinkDialerOptions;
  readonly #log: Logger;
  readonly #maxFrameSize: number;

  constructor(opts: GrpcLinkDialerOptions) {
    this.#opts = opts;
    this.#log = (opts.log ?? nullLogger).with({ transport: "grpc", target: opts.target });
    this.#maxFrameSize = opts.maxFrameSize ?? DEFAULT_GRPC_MAX_FRAME_SIZE;
  }

  /**
   * Opens the Sync call and resolves with the link once aranya accepted it
   * (response headers arrived). Rejects with `UnauthenticatedError`,
   * `AlreadyExistsError`, `UnavailableError` (unreachable, or no answer within
   * `acceptTimeoutMs`) or `CanceledError` (`signal` aborted before acceptance);
   * other refusals map to the matching domain error. Every rejection releases
   * the channel.
   */
  dial(signal: AbortSignal): Promise<Link> {
    const { target, device } = this.#opts;
    if (signal.aborted) {
      return Promise.reject(new CanceledError(`Dialing aranya at "${target}" was canceled`));
    }
    const client = new grpc.Client(target, this.#credentials(), this.#channelOptions());
    const metadata = new grpc.Metadata();
    metadata.set(DEVICE_METADATA, device);
    if (this.#opts.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.#opts.token}`);
    }
    const call = client.makeBidiStreamRequest<Buffer, Buffer>(
      SYNC_PATH,
      identity,
      identity,
      metadata,
    );
    const acceptMs = this.#opts.acceptTimeoutMs ?? 10_000;
    return new Promise<Link>((resolve, reject) => {
      let link: GrpcDialedLink | undefined;
      let settled = false;
      const cleanup = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
      };
      const fail = (err: AranyaError) => {
        if (settled) return;
        settled = true;
        cleanup();
        call.cancel();
        client.close();
        this.#log.debug("Dial failed", { error: err.message });
        reject(err);
      };
      const onAbort = () => fail(new CanceledError(`Dialing aranya at "${target}" was canceled`));
      signal.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(
        () =>
          fail(
            new UnavailableError(
              `aranya at "${target}" did not accept the Sync call within ${acceptMs} ms`,
            ),
          ),
        acceptMs,
      );
      // Every failure also arrives as "status", which is handled below.
      call.on("error", () => {});
      call.on("metadata", () => {
        if (settled) return;
        settled = true;
        cleanup();
        link = new GrpcDialedLink(device, this.#maxFrameSize, call, client, this.#log);
        this.#log.debug("Sync call accepted");
        resolve(link);
      });
      call.on("data", (message: Buffer) => link?.receive(message));
      call.on("status", (status: grpc.StatusObject) => {
        if (link) {
          link.onStatus(status);
          return;
        }
        if (settled) return;
        settled = true;
        cleanup();
        client.close();
        const err = statusToError(status, target, device);
        this.#log.debug("Sync call refused", { code: status.code, details: status.details });
        reject(err);
      });
    });
  }

  #credentials(): grpc.ChannelCredentials {
    const t = this.#opts.tls;
    if (!t) return grpc.credentials.createInsecure();
    const buf = (v: string | Uint8Array | undefined) =>
      v === undefined ? null : typeof v === "string" ? Buffer.from(v) : Buffer.from(v);
    return grpc.credentials.createSsl(buf(t.ca), buf(t.key), buf(t.cert));
  }

  #channelOptions(): grpc.ChannelOptions {
    const options: grpc.ChannelOptions = {
      "grpc.client_idle_timeout_ms": CLIENT_IDLE_TIMEOUT_MS,
      // Room for a frame plus gRPC's own 5-byte prefix; aranya enforces the limit.
      "grpc.max_receive_message_length": this.#maxFrameSize,
      "grpc.max_send_message_length": this.#maxFrameSize,
      // A fresh channel per dial: never share one with another dialer.
      "grpc.use_local_subchannel_pool": 1,
      // No transparent retries: a refused Sync is an answer, not a glitch.
      "grpc.enable_retries": 0,
    };
    if (this.#opts.tls?.serverName) {
      options["grpc.ssl_target_name_override"] = this.#opts.tls.serverName;
      options["grpc.default_authority"] = this.#opts.tls.serverName;
    }
    const keepaliveMs = this.#opts.keepaliveMs ?? 0;
    if (keepaliveMs > 0) {
      options["grpc.keepalive_time_ms"] = keepaliveMs;
      options["grpc.keepalive_timeout_ms"] = keepaliveMs;
    }
    return options;
  }
}

/** The domain error for a status that ended a Sync call before acceptance. */
export function statusToError(
  status: Pick<grpc.StatusObject, "code" | "details">,
  target: string,
  device: string,
): AranyaError {
  const details = status.details || grpc.status[status.code] || `status ${status.code}`;
  switch (status.code) {
    case grpc.status.UNAUTHENTICATED:
      return new UnauthenticatedError(details);
    case grpc.status.ALREADY_EXISTS:
      return new AlreadyExistsError(details);
    case grpc.status.PERMISSION_DENIED:
      return new ForbiddenError(details);
    case grpc.status.INVALID_ARGUMENT:
      return new InvalidInputError(details);
    case grpc.status.UNIMPLEMENTED:
      return new NotSupportedError(`aranya at "${target}" does not serve Sync: ${details}`);
    case grpc.status.RESOURCE_EXHAUSTED:
    case grpc.status.INTERNAL:
      return new ProtocolError(`aranya at "${target}" refused device "${device}": ${details}`);
    case grpc.status.CANCELLED:
      return new CanceledError(details);
    default:
      // UNAVAILABLE, DEADLINE_EXCEEDED, UNKNOWN, ...: aranya cannot be reached now.
      return new UnavailableError(`aranya at "${target}" is unavailable: ${details}`);
  }
}

/** The device side of an accepted Sync call. */
class GrpcDialedLink extends BaseLink {
  readonly #call: grpc.ClientDuplexStream<Buffer, Buffer>;
  readonly #client: grpc.Client;
  readonly #log: Logger;
  #closeTimer?: ReturnType<typeof setTimeout>;

  constructor(
    device: string,
    maxFrameSize: number,
    call: grpc.ClientDuplexStream<Buffer, Buffer>,
    client: grpc.Client,
    log: Logger,
  ) {
    super(device, "grpc", maxFrameSize);
    this.#call = call;
    this.#client = client;
    this.#log = log;
  }

  /** One message from aranya (a fresh buffer grpc-js allocated for it). */
  receive(message: Buffer): void {
    this.deliver(new Uint8Array(message.buffer, message.byteOffset, message.byteLength));
  }

  /** The call ended: aranya's status, or grpc-js's for a broken connection. */
  onStatus(status: grpc.StatusObject): void {
    clearTimeout(this.#closeTimer);
    const name = grpc.status[status.code] ?? String(status.code);
    this.markClosed(
      "remote",
      status.details ? `${name}: ${status.details}` : `Call ended with status ${name}`,
    );
    this.#client.close();
  }

  protected write(frame: Uint8Array): Promise<void> {
    const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    return new Promise((resolve, reject) => {
      this.#call.write(buf, (err: Error | null | undefined) => {
        if (err) {
          reject(new UnavailableError(`Sending to aranya failed: ${err.message}`));
        } else resolve();
      });
    });
  }

  protected shutdown(reason: string): void {
    this.#log.debug("Closing the Sync call", { reason });
    // Half-close: aranya answers with status OK, which closes the channel.
    // If it does not answer in time, cancel.
    this.#call.end();
    this.#closeTimer = setTimeout(() => {
      this.#call.cancel();
      this.#client.close();
    }, CLOSE_TIMEOUT_MS);
  }
}
