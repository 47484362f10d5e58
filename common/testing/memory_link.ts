/**
 * Two Links joined in memory, for unit tests of the session layer (the
 * transports have their own tests against real sockets and brokers).
 */
import { BaseLink } from "../link_base.ts";

class MemoryLink extends BaseLink {
  peer?: MemoryLink;

  protected write(frame: Uint8Array): Promise<void> {
    const peer = this.peer!;
    const copy = frame.slice();
    queueMicrotask(() => peer.receiveFromPeer(copy));
    return Promise.resolve();
  }

  receiveFromPeer(frame: Uint8Array): void {
    this.deliver(frame);
  }

  protected shutdown(reason: string): void {
    const peer = this.peer!;
    queueMicrotask(() => peer.closeFromPeer(reason));
  }

  closeFromPeer(reason: string): void {
    this.markClosed("remote", reason);
  }
}

/** A connected pair: `[aranyaSide, deviceSide]`. */
export function memoryLinkPair(device = "ns/dev", maxFrameSize = 64 * 1024): [BaseLink, BaseLink] {
  const a = new MemoryLink(device, "memory", maxFrameSize);
  const b = new MemoryLink(device, "memory", maxFrameSize);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
