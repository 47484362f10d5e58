/**
 * The shape of long-running parts: `run(signal)` until the signal aborts, and
 * `ready` once they serve. Constructors do no I/O.
 */
import { deferred } from "./deferred.ts";

/** A long-running part. */
export interface Runnable {
  /** Runs until `signal` aborts; rejects only on a failure it cannot recover from. */
  run(signal: AbortSignal): Promise<void>;
  /** Resolves once the part is serving; rejects if it failed to start. */
  readonly ready: Promise<void>;
}

/** A `ready` promise with the functions that settle it (unhandled rejections are suppressed). */
export function readySignal(): {
  promise: Promise<void>;
  resolve(): void;
  reject(e: unknown): void;
} {
  const d = deferred<void>();
  d.promise.catch(() => {});
  return d;
}

/** Resolves when `signal` aborts (immediately if it has). */
export function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true })
  );
}
