/**
 * A keyed work queue for level-triggered reconcilers, in the manner of
 * client-go's workqueue: events only enqueue keys; a key waiting in the queue
 * is held once however often it is added; a key being processed is never
 * handed to a second worker, and if it was added meanwhile it is processed
 * again afterwards; failures are retried with per-key exponential back-off.
 */
import { Backoff, type BackoffOptions } from "@aranya/common/backoff";
import { errorMessage } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";

/** Options for {@link WorkQueue}. */
export interface WorkQueueOptions {
  /** Workers processing keys at once (default 4). */
  workers?: number;
  /** Retry back-off per key (default 100 ms doubling to 60 s). */
  backoff?: BackoffOptions;
  /** Told the result of every reconcile (for metrics). */
  onResult?: (result: "success" | "error") => void;
  log?: Logger;
}

/** Processes one key; throwing schedules a retry with back-off. */
export type Reconcile = (key: string, signal: AbortSignal) => Promise<void>;

/** Keyed, de-duplicating, rate-limited work queue. */
export class WorkQueue {
  readonly #queue: string[] = [];
  readonly #queued = new Set<string>();
  readonly #processing = new Set<string>();
  readonly #dirty = new Set<string>();
  readonly #retries = new Map<
    string,
    { backoff: Backoff; timer?: ReturnType<typeof setTimeout> }
  >();
  readonly #opts: WorkQueueOptions;
  readonly #log: Logger;
  /** Idle workers, each woken by one added key. */
  readonly #idle: (() => void)[] = [];
  #processed = 0;

  constructor(opts: WorkQueueOptions = {}) {
    this.#opts = opts;
    this.#log = opts.log ?? nullLogger;
  }

  /** Adds `key` (no-op when it is already waiting). */
  add(key: string): void {
    if (this.#processing.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    this.#queue.push(key);
    this.#idle.shift()?.();
  }

  /** Adds `key` after `ms`. */
  addAfter(key: string, ms: number): void {
    const t = setTimeout(() => this.add(key), ms);
    const r = this.#retries.get(key);
    if (r) {
      clearTimeout(r.timer);
      r.timer = t;
    } else {
      this.#retries.set(key, { backoff: this.#newBackoff(), timer: t });
    }
  }

  /** Keys waiting now. */
  get length(): number {
    return this.#queue.length;
  }

  /** Reconciles completed so far (successes and failures). */
  get processed(): number {
    return this.#processed;
  }

  #newBackoff(): Backoff {
    return new Backoff({ initialMs: 100, maxMs: 60_000, factor: 2, ...this.#opts.backoff });
  }

  /** Runs the workers until `signal` aborts. */
  async run(signal: AbortSignal, reconcile: Reconcile): Promise<void> {
    const worker = async () => {
      while (!signal.aborted) {
        const key = this.#queue.shift();
        if (key === undefined) {
          // The abort listener is removed after each wait: workers wait often, for the whole
          // life of the process.
          let onAbort = () => {};
          await new Promise<void>((resolve) => {
            this.#idle.push(resolve);
            onAbort = () => resolve();
            signal.addEventListener("abort", onAbort, { once: true });
          });
          signal.removeEventListener("abort", onAbort);
          continue;
        }
        this.#queued.delete(key);
        this.#processing.add(key);
        try {
          await reconcile(key, signal);
          this.#opts.onResult?.("success");
          const r = this.#retries.get(key);
          if (r) {
            clearTimeout(r.timer);
            this.#retries.delete(key);
          }
        } catch (err) {
          this.#opts.onResult?.("error");
          if (!signal.aborted) {
            let r = this.#retries.get(key);
            if (!r) {
              r = { backoff: this.#newBackoff() };
              this.#retries.set(key, r);
            }
            const delay = r.backoff.next();
            this.#log.warn("reconcile failed; retrying", {
              object: key, // not "key": the logger redacts fields named like credentials
              error: errorMessage(err),
              retryInMs: delay,
            });
            clearTimeout(r.timer);
            r.timer = setTimeout(() => this.add(key), delay);
          }
        } finally {
          this.#processed++;
          this.#processing.delete(key);
          if (this.#dirty.delete(key)) this.add(key);
        }
        // Let other workers (and I/O) run between keys.
        await new Promise((r) => setTimeout(r, 0));
        if (this.#queue.length > 0) this.#idle.shift()?.();
      }
    };
    await Promise.all(Array.from({ length: this.#opts.workers ?? 4 }, worker));
    for (const r of this.#retries.values()) clearTimeout(r.timer);
    this.#retries.clear();
  }
}
