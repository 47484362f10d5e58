/** The devices connected now, across all transports (one link per device). */
import type { Link, LinkRegistry } from "@aranya/common/link";

/** In-process {@link LinkRegistry}. */
export class MemoryLinkRegistry implements LinkRegistry {
  readonly #links = new Map<string, Link>();

  claim(link: Link): boolean {
    const current = this.#links.get(link.device);
    if (current && current !== link) return false;
    this.#links.set(link.device, link);
    link.closed.then(() => this.release(link));
    return true;
  }

  release(link: Link): void {
    if (this.#links.get(link.device) === link) this.#links.delete(link.device);
  }

  get(device: string): Link | undefined {
    return this.#links.get(device);
  }

  /** Number of connected devices. */
  get size(): number {
    return this.#links.size;
  }
}
