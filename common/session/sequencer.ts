/**
 * Restores the order of one session's incoming frames by `seq` and drops
 * duplicates (MQTT QoS 1 may redeliver after a reconnect).
 */
import { ProtocolError } from "../errors.ts";

/** The fields the sequencer looks at. */
export interface Sequenced {
  seq: bigint;
}

/** Default number of out-of-order frames held before the session is failed. */
export const DEFAULT_MAX_PENDING = 1024;

/** In-order delivery for one session and direction. */
export class Sequencer<F extends Sequenced> {
  #next = 0n;
  readonly #pending = new Map<bigint, F>();

  constructor(readonly maxPending: number = DEFAULT_MAX_PENDING) {}

  /**
   * Accepts a frame; returns the frames that are now deliverable, in order
   * (possibly none). Duplicates return nothing. Throws ProtocolError when more
   * than `maxPending` frames wait for a missing one.
   */
  push(frame: F): F[] {
    if (frame.seq < this.#next || this.#pending.has(frame.seq)) return [];
    if (frame.seq !== this.#next) {
      if (this.#pending.size >= this.maxPending) {
        throw new ProtocolError(
          `Frame ${this.#next} never arrived while ${this.#pending.size} later frames waited`,
        );
      }
      this.#pending.set(frame.seq, frame);
      return [];
    }
    const out = [frame];
    this.#next++;
    for (let f = this.#pending.get(this.#next); f; f = this.#pending.get(this.#next)) {
      this.#pending.delete(this.#next);
      out.push(f);
      this.#next++;
    }
    return out;
  }

  /** Sequence number expected next. */
  get next(): bigint {
    return this.#next;
  }
}
