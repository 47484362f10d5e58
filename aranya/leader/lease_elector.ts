/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's
 * `leaderelection` does it, so only one aranya replica serves devices and runs
 * controllers while the others stand by.
 *
 * - A candidate reads the Lease every `retryPeriod` (plus up to 20 % jitter).
 *   It takes the Lease when it is free (no holder, or the holder released
 *   it) or expired: the holder's record has not changed for the holder's
 *   `leaseDurationSeconds` as measured on THIS replica's clock since it first
 *   saw that record (so clock skew between replicas does not matter). Taking
 *   it sets `holderIdentity`, `acquireTime`, `renewTime` and increments
 *   `leaseTransitions`.
 * - Every write is a replace carrying the `resourceVersion` that was read, so
 *   of two replicas racing only one succeeds; a 409 Conflict means the other
 *   one won.
 * - The leader renews (`renewTime`) every `retryPeriod` using the Lease it
 *   last wrote (one request per renewal). It stops leading when the Lease
 *   shows another holder, or when no renewal succeeded for `renewDeadline`
 *   (shorter than `leaseDuration`, so it stops before anyone may take over).
 * - On shutdown the leader first waits for its work to stop, then releases
 *   the Lease (empty holder, `leaseDurationSeconds: 1`) so a standby takes
 *   over at its next retry instead of after the lease duration.
 *
 * The work of the leader runs in the `onLeading` callback: it gets a signal
 * that aborts when leadership is lost or on shutdown, and must settle soon
 * after. After a loss the elector becomes a candidate again (the callback runs
 * again when it leads again). If the callback settles while still leading,
 * the elector releases the Lease and `run` ends (rejecting with the callback's
 * error, if it failed).
 *
 * @module
 */
import { type CoordinationV1Api, type V1Lease, V1MicroTime } from "@kubernetes/client-node";
import { errorMessage, InvalidInputError } from "../../common/errors.ts";
import { readySignal, type Runnable } from "../../common/lifecycle.ts";
import { type Logger, nullLogger } from "../../common/log.ts";
import { withSignal } from "../kube/client.ts";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";

/** What the leader does while it leads; `signal` aborts when it must stop. */
export type LeadingCallback = (signal: AbortSignal) => Promise<void>;

/** A leader election: {@link LeaseElector}, or {@link StaticLeader} when election is off. */
export interface LeaderElector extends Runnable {
  /** True while this replica leads. */
  readonly isLeader: boolean;
  /** The holder last seen in the Lease (this replica's identity while it leads). */
  readonly leader: string | undefined;
  /** Sets the work to run while leading; call before `run`. */
  onLeading(callback: LeadingCallback): this;
}

/** Options of {@link LeaseElector}. */
export interface LeaseElectorOptions {
  coordination: CoordinationV1Api;
  /** Namespace and name of the Lease (created when missing; the namespace must exist). */
  namespace: string;
  name: string;
  /** This replica's identity; unique among the replicas. */
  identity: string;
  /** How long others wait after the last renewal before taking over; whole seconds. */
  leaseDurationMs: number;
  /** The leader stops when no renewal succeeded for this long; shorter than leaseDurationMs. */
  renewDeadlineMs: number;
  /** Interval of renewals and of a candidate's tries; shorter than renewDeadlineMs. */
  retryPeriodMs: number;
  /** Release the Lease on shutdown (default true). */
  releaseOnShutdown?: boolean;
  /** Told of every change of this replica's leadership (for example to set `aranya_leader`). */
  onChange?: (isLeader: boolean) => void;
  log?: Logger;
}

/** Why leading ended. */
type LeadEnd =
  | { kind: "shutdown" }
  | { kind: "lost"; reason: string }
  | { kind: "callback"; error?: unknown };

/** Lease-based leader election; see the module doc. */
export class LeaseElector implements LeaderElector {
  readonly #o: LeaseElectorOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  #callback: LeadingCallback = (signal) =>
    new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  #isLeader = false;
  #leader: string | undefined;
  /** The Lease as we last read or wrote it. */
  #lease: V1Lease | undefined;
  /** The record last seen (holder, renewTime, resourceVersion) and when we first saw it. */
  #observed = { key: "", atMs: 0 };
  #lastError = "";

  /** @throws InvalidInputError when the timings are inconsistent. Does no I/O. */
  constructor(opts: LeaseElectorOptions) {
    const { leaseDurationMs: lease, renewDeadlineMs: renew, retryPeriodMs: retry } = opts;
    if (!(lease >= 1000 && renew < lease && retry < renew && retry > 0)) {
      throw new InvalidInputError(
        `Leader election needs leaseDuration (${lease}ms) >= 1s > renewDeadline (${renew}ms) ` +
          `> retryPeriod (${retry}ms) > 0, in that order`,
      );
    }
    if (!opts.identity) throw new InvalidInputError("Leader election needs an identity");
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({
      component: "leader-election",
      lease: `${opts.namespace}/${opts.name}`,
      identity: opts.identity,
    });
  }

  /** Resolves after the first try: `isLeader` and `leader` are known then. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  get isLeader(): boolean {
    return this.#isLeader;
  }

  get leader(): string | undefined {
    return this.#leader;
  }

  onLeading(callback: LeadingCallback): this {
    this.#callback = callback;
    return this;
  }

  /** Contests and leads until `signal` aborts; see the module doc. */
  async run(signal: AbortSignal): Promise<void> {
    try {
      while (!signal.aborted) {
        if (!(await this.#acquire(signal))) break;
        const end = await this.#lead(signal);
        if (end.kind === "lost") continue;
        if (end.kind === "callback" && end.error !== undefined) throw end.error;
        break;
      }
    } finally {
      this.#ready.resolve(); // aborted before the first try: nothing to wait for
    }
  }

  /** Tries until the Lease is ours (true) or `signal` aborts (false). */
  async #acquire(signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      const won = await this.#tryAcquireOrRenew(signal);
      this.#ready.resolve();
      if (won) return true;
      const jitter = 1 + Math.random() * 0.2;
      await sleep(this.#o.retryPeriodMs * jitter, signal);
    }
    return false;
  }

  /** Leads: runs the callback and renews until leading ends; then cleans up. */
  async #lead(signal: AbortSignal): Promise<LeadEnd> {
    const leading = new AbortController();
    this.#setLeader(true);
    this.#log.info("became the leader", {
      transitions: this.#lease?.spec?.leaseTransitions ?? 0,
    });
    const cb: { end?: { error?: unknown } } = {};
    const callbackDone = (async () => {
      try {
        await this.#callback(leading.signal);
        cb.end = {};
      } catch (error) {
        cb.end = { error };
      }
      leading.abort(new Error("The leading callback ended"));
    })();
    const stop = AbortSignal.any([signal, leading.signal]);

    let end: LeadEnd | undefined;
    let lastRenew = performance.now();
    while (end === undefined) {
      await sleep(this.#o.retryPeriodMs, stop);
      if (cb.end) {
        end = { kind: "callback", error: cb.end.error };
        break;
      }
      if (signal.aborted) {
        end = { kind: "shutdown" };
        break;
      }
      const deadline = lastRenew + this.#o.renewDeadlineMs;
      const attempt = AbortSignal.any([
        signal,
        AbortSignal.timeout(Math.max(1, deadline - performance.now())),
      ]);
      const renewed = await this.#tryAcquireOrRenew(attempt);
      if (renewed) {
        lastRenew = performance.now();
      } else if (this.#leader !== undefined && this.#leader !== this.#o.identity) {
        end = { kind: "lost", reason: `the Lease is held by "${this.#leader}"` };
      } else if (performance.now() >= deadline) {
        end = {
          kind: "lost",
          reason: `no renewal succeeded for ${this.#o.renewDeadlineMs}ms${
            this.#lastError ? ` (last error: ${this.#lastError})` : ""
          }`,
        };
      } else if (signal.aborted) {
        end = { kind: "shutdown" };
      }
    }

    this.#setLeader(false);
    if (end.kind === "lost") {
      this.#log.warn("lost leadership", { reason: end.reason });
      this.#lease = undefined;
      leading.abort(new Error(`Leadership lost: ${end.reason}`));
    } else {
      leading.abort(new Error("Shutting down"));
    }
    await callbackDone;
    const error = cb.end?.error;
    if (error !== undefined) {
      this.#log.error("the leader's work failed", { error: errorMessage(error) });
    }
    if (end.kind === "lost") return end;
    if (this.#o.releaseOnShutdown ?? true) await this.#release();
    return error !== undefined ? { kind: "callback", error } : end;
  }

  /**
   * One try to take or renew the Lease. True when this replica holds it now. Never throws:
   * API failures are logged and count as not holding it.
   */
  async #tryAcquireOrRenew(signal: AbortSignal): Promise<boolean> {
    const { namespace, name } = this.#o;
    try {
      // A leader renews from the Lease it last wrote; on a conflict it reads again once.
      for (let attempt = 0; attempt < 2; attempt++) {
        const cached = this.#isLeader && attempt === 0 ? this.#lease : undefined;
        const lease = cached ?? await this.#read(signal);
        if (lease === undefined) return await this.#create(signal);
        if (!cached) this.#observe(lease);
        const spec = lease.spec ?? {};
        const holder = spec.holderIdentity ?? "";
        const durationMs = (spec.leaseDurationSeconds ?? 0) * 1000;
        if (
          holder !== "" && holder !== this.#o.identity &&
          this.#observed.atMs + durationMs > performance.now()
        ) {
          return false; // held by another replica and not expired
        }
        const now = new V1MicroTime();
        const mine = holder === this.#o.identity;
        const body: V1Lease = {
          ...lease,
          spec: {
            ...spec,
            holderIdentity: this.#o.identity,
            leaseDurationSeconds: Math.ceil(this.#o.leaseDurationMs / 1000),
            renewTime: now,
            acquireTime: mine ? spec.acquireTime : now,
            leaseTransitions: mine ? spec.leaseTransitions ?? 0 : (spec.leaseTransitions ?? 0) + 1,
          },
        };
        try {
          const written = await this.#o.coordination.replaceNamespacedLease(
            { namespace, name, body },
            withSignal(signal),
          );
          this.#wrote(written);
          return true;
        } catch (err) {
          if (apiStatus(err) !== 409) throw err;
          this.#lease = undefined; // someone else wrote it: read again
          if (!cached) return false;
        }
      }
      return false;
    } catch (err) {
      if (signal.aborted) {
        this.#lastError = "the request timed out or was canceled";
      } else {
        this.#noteError(fromApiError(`Taking or renewing Lease "${namespace}/${name}"`, err));
      }
      return false;
    }
  }

  async #read(signal: AbortSignal): Promise<V1Lease | undefined> {
    const { namespace, name } = this.#o;
    try {
      return await this.#o.coordination.readNamespacedLease(
        { namespace, name },
        withSignal(signal),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async #create(signal: AbortSignal): Promise<boolean> {
    const { namespace, name } = this.#o;
    const now = new V1MicroTime();
    try {
      const created = await this.#o.coordination.createNamespacedLease({
        namespace,
        body: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec: {
            holderIdentity: this.#o.identity,
            leaseDurationSeconds: Math.ceil(this.#o.leaseDurationMs / 1000),
            acquireTime: now,
            renewTime: now,
            leaseTransitions: 0,
          },
        },
      }, withSignal(signal));
      this.#wrote(created);
      return true;
    } catch (err) {
      if (apiStatus(err) === 409) return false; // another replica created it first
      throw err;
    }
  }

  /** Gives the Lease up (best effort) so a standby takes over at once. */
  async #release(): Promise<void> {
    const lease = this.#lease;
    if (!lease || lease.spec?.holderIdentity !== this.#o.identity) return;
    const { namespace, name } = this.#o;
    const now = new V1MicroTime();
    try {
      await this.#o.coordination.replaceNamespacedLease({
        namespace,
        name,
        body: {
          ...lease,
          spec: {
            ...lease.spec,
            holderIdentity: "",
            leaseDurationSeconds: 1,
            acquireTime: now,
            renewTime: now,
          },
        },
      }, withSignal(AbortSignal.timeout(this.#o.renewDeadlineMs)));
      this.#log.info("released the Lease");
      this.#setHolder(undefined);
    } catch (err) {
      // A conflict means someone else wrote it since: it is not ours to release any more.
      this.#log.warn("releasing the Lease failed", {
        error: errorMessage(fromApiError(`Releasing Lease "${namespace}/${name}"`, err)),
      });
    } finally {
      this.#lease = undefined;
    }
  }

  /** Records a Lease read from the API: who holds it and since when (our clock) it is unchanged. */
  #observe(lease: V1Lease): void {
    const spec = lease.spec ?? {};
    const key = JSON.stringify([
      spec.holderIdentity ?? "",
      String(spec.renewTime ?? ""),
      lease.metadata?.resourceVersion ?? "",
    ]);
    if (key !== this.#observed.key) this.#observed = { key, atMs: performance.now() };
    this.#lease = lease;
    this.#setHolder(spec.holderIdentity || undefined);
  }

  #wrote(lease: V1Lease): void {
    this.#lease = lease;
    this.#observed = { key: "", atMs: performance.now() };
    this.#lastError = "";
    this.#setHolder(this.#o.identity);
  }

  #setHolder(holder: string | undefined): void {
    if (holder === this.#leader) return;
    this.#leader = holder;
    if (holder !== undefined && holder !== this.#o.identity) {
      this.#log.info("observed a new leader", { leader: holder });
    }
  }

  #setLeader(v: boolean): void {
    if (v === this.#isLeader) return;
    this.#isLeader = v;
    this.#o.onChange?.(v);
  }

  #noteError(err: Error): void {
    if (err.message !== this.#lastError) {
      this.#log.warn("leader election request failed", { error: err.message });
    }
    this.#lastError = err.message;
  }
}

/** No election (one replica): leads at once until `run`'s signal aborts. */
export class StaticLeader implements LeaderElector {
  readonly #ready = readySignal();
  #callback: LeadingCallback | undefined;
  #isLeader = false;

  constructor(readonly identity: string, readonly onChange?: (isLeader: boolean) => void) {}

  get ready(): Promise<void> {
    return this.#ready.promise;
  }
  get isLeader(): boolean {
    return this.#isLeader;
  }
  get leader(): string | undefined {
    return this.#isLeader ? this.identity : undefined;
  }
  onLeading(callback: LeadingCallback): this {
    this.#callback = callback;
    return this;
  }
  /** Runs the callback with `signal`; rejects with its error if it fails. */
  async run(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return this.#ready.resolve();
    this.#isLeader = true;
    this.onChange?.(true);
    this.#ready.resolve();
    try {
      if (this.#callback) await this.#callback(signal);
      else await sleep(Infinity, signal);
    } finally {
      this.#isLeader = false;
      this.onChange?.(false);
    }
  }
}

/** Resolves after `ms` or when `signal` aborts, whichever is first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = Number.isFinite(ms) ? setTimeout(done, ms) : undefined;
    signal.addEventListener("abort", done, { once: true });
  });
}
