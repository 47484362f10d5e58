/**
 * `Link`: one authenticated connection between aranya and one device,
 * carrying encoded envelopes (`Cmd` down, `Msg` up). Every transport
 * (websocket, mqtt, grpc) produces Links; the session layer on top never
 * knows which transport it runs on.
 */
import type { ProtocolError } from "./errors.ts";

/** Why a link closed. */
export interface LinkCloseInfo {
  /** Who closed it: this side, the peer, or a transport failure. */
  by: "local" | "remote" | "error";
  reason: string;
}

/** One connection to (aranya side) or from (arhat side) a device. */
export interface Link {
  /** The device this link belongs to: "<namespace>/<name>". */
  readonly device: string;
  /** The transport's name, for logs and metrics ("websocket", "mqtt", "grpc", "memory"). */
  readonly transport: string;
  /**
   * The largest encoded frame the transport carries. The session layer splits
   * payloads so that no frame is larger; a larger frame from the peer is a
   * protocol error.
   */
  readonly maxFrameSize: number;
  /**
   * Starts delivering received frames to `onFrame`, in the order the peer sent
   * them, one call at a time. Call exactly once. `onFrame` must not throw and
   * must not block; the link owns nothing after the call returns.
   */
  start(onFrame: (frame: Uint8Array) => void): void;
  /**
   * Sends one encoded frame after every frame sent before it. Resolves when the
   * transport has accepted it (written to the socket or, for MQTT, handed to
   * the client with QoS 1); applies backpressure by resolving later when the
   * transport's buffer is full. Rejects with `UnavailableError` once the link is
   * closed. The caller must not reuse `frame` afterwards.
   */
  send(frame: Uint8Array): Promise<void>;
  /** Resolves (never rejects) when the link has closed, by either side. */
  readonly closed: Promise<LinkCloseInfo>;
  /**
   * Closes the link. Idempotent; pending sends reject. A {@link ProtocolError} as the reason
   * says the peer broke the protocol (a malformed frame): `closed` reports it by "error", and
   * the transport says so on the wire where it can (gRPC status 3 INVALID_ARGUMENT, websocket
   * close code 1002).
   */
  close(reason?: string | ProtocolError): void;
}

/** Checks a device's credentials; implemented by aranya (Secrets) and by tests. */
export interface DeviceAuthenticator {
  /**
   * Resolves when `credentials` prove that the caller is `device`
   * ("<namespace>/<name>"); rejects with `UnauthenticatedError` otherwise.
   * Must not leak which part was wrong.
   */
  authenticate(device: string, credentials: DeviceCredentials): Promise<void>;
}

/**
 * The devices' MQTT link keys (common/mqtt_seal.ts), for the transport that
 * authenticates devices by proof instead of by credentials sent over it.
 */
export interface DeviceKeyring {
  /**
   * The link key of `device` ("<namespace>/<name>"), derived from credentials
   * that device owns; undefined when the device is unknown or has none.
   * `fresh`: read the credentials again (a proof failed: the token may have
   * rotated), as often as the implementation allows. Rejects with
   * `UnavailableError` when the credentials cannot be read now.
   */
  linkKey(device: string, opts?: { fresh?: boolean }): Promise<Uint8Array | undefined>;
}

/** What a connecting device presents. */
export interface DeviceCredentials {
  /** Bearer token from the device's credentials Secret. */
  token?: string;
  /**
   * Subject CN of a client certificate the listener verified against the device
   * CA; it proves the device only when it is exactly "<namespace>/<name>".
   */
  certificateCN?: string;
}

/**
 * The devices connected now, across all transports. A second connection
 * claiming a device that is already connected is refused.
 */
export interface LinkRegistry {
  /**
   * Records `link` as the device's connection. Returns false (and records
   * nothing) when the device already has a live link.
   */
  claim(link: Link): boolean;
  /** Forgets `link` if it is the device's current one. */
  release(link: Link): void;
  /** The device's live link, if any. */
  get(device: string): Link | undefined;
}

/** Aranya side of a transport: accepts device connections and hands out Links. */
export interface LinkServer {
  /** The transport's name. */
  readonly transport: string;
  /**
   * Serves until `signal` aborts, then closes every link and its listener or
   * client. Calls `onLink` for each authenticated, claimed link. Rejects only
   * when the server cannot start (for example, the port is taken).
   */
  run(signal: AbortSignal, onLink: (link: Link) => void): Promise<void>;
  /** Resolves once the server accepts connections. */
  readonly ready: Promise<void>;
}

/** Arhat side of a transport: opens one connection to aranya. */
export interface LinkDialer {
  /** The transport's name. */
  readonly transport: string;
  /**
   * Connects and authenticates; resolves with the link once aranya accepted it.
   * Rejects with `UnauthenticatedError` or `AlreadyExistsError` when aranya
   * refuses the device, `UnavailableError` when aranya cannot be reached, or
   * `CanceledError` when `signal` aborts.
   */
  dial(signal: AbortSignal): Promise<Link>;
}
