/**
 * Keeps arhat connected: tries the configured transports in priority order
 * (lowest number first), each with its own jittered exponential back-off,
 * hands every accepted Link to `onLink`, waits for it to close, and starts
 * over. Stops when the signal aborts. A refused device (bad credentials,
 * already connected elsewhere) is retried too, but logged as an error: an
 * operator has to act.
 */
import { Backoff, type BackoffOptions, sleep } from "@aranya/common/backoff";
import { errorMessage, isKind } from "@aranya/common/errors";
import type { Link, LinkDialer } from "@aranya/common/link";
import { readySignal } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";

/** One transport to try. */
export interface ConnectorMethod {
  dialer: LinkDialer;
  /** Lower is tried first (default 0). */
  priority?: number;
  backoff?: BackoffOptions;
}

/** Options for {@link Connector}. */
export interface ConnectorOptions {
  methods: ConnectorMethod[];
  /** Called with each accepted link; the connector waits for it to close. */
  onLink: (link: Link) => void;
  log?: Logger;
}

/** arhat's reconnect loop. */
export class Connector {
  readonly #methods: { dialer: LinkDialer; priority: number; backoff: Backoff }[];
  readonly #onLink: (link: Link) => void;
  readonly #log: Logger;
  readonly #ready = readySignal();
  #connects = 0;

  constructor(opts: ConnectorOptions) {
    if (opts.methods.length === 0) throw new RangeError("Connector needs at least one method");
    this.#methods = opts.methods
      .map((m) => ({
        dialer: m.dialer,
        priority: m.priority ?? 0,
        backoff: new Backoff(m.backoff),
      }))
      .sort((a, b) => a.priority - b.priority);
    this.#onLink = opts.onLink;
    this.#log = opts.log ?? nullLogger;
  }

  /** Resolves after the first successful connection. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Successful connections so far. */
  get connects(): number {
    return this.#connects;
  }

  /** Runs until `signal` aborts. Never rejects for connection failures. */
  async run(signal: AbortSignal): Promise<void> {
    let i = 0;
    while (!signal.aborted) {
      const m = this.#methods[i % this.#methods.length]!;
      i++;
      let link: Link;
      try {
        link = await m.dialer.dial(signal);
      } catch (err) {
        if (signal.aborted) break;
        const delay = m.backoff.next();
        const refused = isKind(err, "unauthenticated") || isKind(err, "already-exists");
        (refused ? this.#log.error : this.#log.warn)("connecting to aranya failed", {
          transport: m.dialer.transport,
          error: errorMessage(err),
          retryInMs: delay,
        });
        // Try the next method right away; wait only when every method failed this round.
        if (i % this.#methods.length === 0) {
          await sleep(delay, signal).catch(() => {});
        }
        continue;
      }
      m.backoff.reset();
      i = 0; // after a loss, start again with the preferred method
      this.#connects++;
      this.#log.info("connected to aranya", { transport: link.transport });
      this.#ready.resolve();
      this.#onLink(link);
      const onAbort = () => link.close("arhat is stopping");
      signal.addEventListener("abort", onAbort, { once: true });
      const info = await link.closed;
      signal.removeEventListener("abort", onAbort);
      if (!signal.aborted) {
        this.#log.warn("link to aranya lost", { transport: link.transport, ...info });
        await sleep(m.backoff.next(), signal).catch(() => {});
      }
    }
  }
}
