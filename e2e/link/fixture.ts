/**
 * What the link conformance suite needs from a transport: a way to run the
 * aranya-side server (and broker), dial it as a device, restart it, and abuse
 * it with raw traffic. One implementation per transport, beside this file.
 */
import type {
  DeviceAuthenticator,
  DeviceKeyring,
  Link,
  LinkDialer,
  LinkRegistry,
} from "@aranya/common/link";

/** Options for {@link TransportFixture.start}. */
export interface FixtureStartOptions {
  /** Checks credentials (websocket, grpc) and holds link keys (mqtt). */
  authenticator: DeviceAuthenticator & DeviceKeyring;
  registry: LinkRegistry;
  /** Called for every accepted link (after authentication and claim). */
  onLink: (link: Link) => void;
}

/** A running transport under test. */
export interface TransportHandle {
  /** A dialer for `device` ("ns/name") presenting `token`. */
  dialer(device: string, token: string): LinkDialer;
  /**
   * Restarts the server side (websocket, grpc: aranya's listener on the same
   * port; mqtt: the broker). Live links close; new dials succeed afterwards.
   */
  restart(): Promise<void>;
  /**
   * Opens an authenticated raw connection as `device`, sends `bytes` as one
   * transport frame (not a valid envelope), and resolves once the server has
   * closed that connection or rejected the frame; rejects if the server kept
   * it open for more than 5 s.
   */
  sendMalformed(device: string, token: string, bytes: Uint8Array): Promise<void>;
  /**
   * Opens `n` connections that disconnect abruptly mid-handshake or
   * mid-stream (TCP reset, GOAWAY-like closes); resolves when all are done.
   */
  abruptDisconnects(n: number): Promise<void>;
  /** Stops server (and broker); idempotent. */
  stop(): Promise<void>;
}

/** A transport under test. */
export interface TransportFixture {
  readonly name: string;
  /** The largest frame the transport carries. */
  readonly maxFrameSize: number;
  start(opts: FixtureStartOptions): Promise<TransportHandle>;
}
