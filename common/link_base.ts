/**
 * Bookkeeping every transport's Link shares: buffering frames that arrive
 * before `start`, the frame size limit, the `closed` promise, and refusing
 * sends after close. A transport implements `write` and `shutdown`.
 */
import { deferred } from "./deferred.ts";
import { InvalidInputError, ProtocolError, UnavailableError } from "./errors.ts";
import type { Link, LinkCloseInfo } from "./link.ts";

/** Base class for transport Links. */
export abstract class BaseLink implements Link {
  #onFrame?: (frame: Uint8Array) => void;
  #early: Uint8Array[] = [];
  #closed = deferred<LinkCloseInfo>();
  #isClosed = false;

  constructor(
    readonly device: string,
    readonly transport: string,
    readonly maxFrameSize: number,
  ) {}

  get closed(): Promise<LinkCloseInfo> {
    return this.#closed.promise;
  }

  /** True once the link closed. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  start(onFrame: (frame: Uint8Array) => void): void {
    if (this.#onFrame) throw new Error("Link.start was called twice");
    this.#onFrame = onFrame;
    const early = this.#early;
    this.#early = [];
    for (const f of early) {
      if (this.#isClosed) break;
      onFrame(f);
    }
  }

  send(frame: Uint8Array): Promise<void> {
    if (this.#isClosed) {
      return Promise.reject(new UnavailableError(`Link to device "${this.device}" is closed`));
    }
    if (frame.byteLength > this.maxFrameSize) {
      return Promise.reject(
        new InvalidInputError(
          `Frame of ${frame.byteLength} bytes exceeds the ${this.transport} limit of ${this.maxFrameSize}`,
        ),
      );
    }
    return this.write(frame);
  }

  close(reason: string | ProtocolError = "closed"): void {
    if (this.#isClosed) return;
    const protocol = reason instanceof ProtocolError;
    const text = protocol ? reason.message : reason;
    this.markClosed(protocol ? "error" : "local", text);
    this.shutdown(text, protocol ? "protocol" : undefined);
  }

  /**
   * Called by the transport for each received frame. An oversized frame closes
   * the link (the peer broke the protocol); it is never delivered.
   */
  protected deliver(frame: Uint8Array): void {
    if (this.#isClosed) return;
    if (frame.byteLength > this.maxFrameSize) {
      this.markClosed(
        "error",
        `Received a frame of ${frame.byteLength} bytes, above the limit of ${this.maxFrameSize}`,
      );
      this.shutdown("oversized frame");
      return;
    }
    if (this.#onFrame) this.#onFrame(frame);
    else this.#early.push(frame);
  }

  /** Called by the transport when the connection ended; idempotent. */
  protected markClosed(by: LinkCloseInfo["by"], reason: string): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#early = [];
    this.#closed.resolve({ by, reason });
  }

  /** Writes one frame to the transport (in order, with backpressure). */
  protected abstract write(frame: Uint8Array): Promise<void>;

  /**
   * Tears the transport connection down; called once, after `markClosed`. `fault` "protocol":
   * the peer broke the protocol (say so on the wire where the transport can).
   */
  protected abstract shutdown(reason: string, fault?: "protocol"): void;
}
