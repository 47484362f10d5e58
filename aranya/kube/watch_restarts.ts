/**
 * Keeps informer watches running: a watch that fails (the API server gone for
 * a moment, or refusing it under load with 429) is started again a second
 * later, and again after each further failure. While any is restarting, the
 * caches it fills may trail the API (`caughtUp` is false).
 *
 * @module
 */
import { errorMessage } from "@aranya/common/errors";
import type { Logger } from "@aranya/common/log";

/** What {@link WatchRestarts.keep} needs of an informer or ListWatch. */
export interface RestartableWatch {
  on(verb: "error", cb: (err: unknown) => void): void;
  start(): Promise<void>;
}

/** Restarts failed watches until `signal` aborts; see the module doc. */
export class WatchRestarts {
  readonly #signal: AbortSignal;
  readonly #log: Logger;
  readonly #restarting = new Set<RestartableWatch>();

  constructor(opts: { signal: AbortSignal; log: Logger }) {
    this.#signal = opts.signal;
    this.#log = opts.log;
  }

  /** True while no watch is restarting. */
  get caughtUp(): boolean {
    return this.#restarting.size === 0;
  }

  /** Restarts `watch` after each error, logging "<what> watch failed" with `fields`. */
  keep(watch: RestartableWatch, what: string, fields: Record<string, unknown> = {}): void {
    watch.on("error", (err: unknown) => {
      this.#log.warn(`${what} watch failed; restarting`, { ...fields, error: errorMessage(err) });
      this.#restarting.add(watch);
      setTimeout(() => {
        if (this.#signal.aborted) return;
        // A start that fails again reports an error, which schedules the next one.
        watch.start().then(() => this.#restarting.delete(watch), () => {});
      }, 1000);
    });
  }
}
