/**
 * Which aranya replicas are alive, from coordination.k8s.io/v1 Leases: the
 * API server is the coordination engine, nothing home-made.
 *
 * - Each replica holds the Lease `<name>-<identity>` in its namespace
 *   (label aranya.arhat.dev/membership=<name>), renewing it every
 *   `retryPeriod`; on shutdown it deletes it, so the others take its share at
 *   once instead of after `leaseDuration`.
 * - ONE watch on those Leases (whatever the fleet size). A member is live
 *   while its Lease changed within its `leaseDurationSeconds`, measured on
 *   THIS replica's clock from when it saw the change (as client-go's leader
 *   election does, so clock skew between replicas does not matter).
 * - A replica that could not renew its own Lease for `renewDeadline` is not
 *   `healthy`: it owns no share and must stop serving its devices (the
 *   caller closes their links) before the others may take them, which they do
 *   only after `leaseDuration` (longer than `renewDeadline`): that is the
 *   fencing.
 * - `owns(key)`: rendezvous hashing of the key over the live members, so a
 *   member joining or leaving moves only its own share.
 * - A process writes `spec.acquireTime` of its Lease once, when it starts
 *   holding it: `startedAt(identity)`. A replica whose process died and came
 *   back under the same identity (a container restarted in its pod) stays a
 *   live member, but the others see its new start, are told (`onChange`), and
 *   know that it holds nothing it took before (node_lease.ts).
 *
 * {@link StaticMembership} is the one-replica case (membership.enabled false).
 *
 * @module
 */
import type { V1Lease } from "@kubernetes/client-node";
import { type CoordinationApi, microTime } from "../kube/apis.ts";
import { errorMessage } from "@aranya/common/errors";
import { readySignal, type Runnable } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";
import { sleep } from "@aranya/common/backoff";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";
import { Informer } from "../kube/informer.ts";
import type { KubeHttp } from "../kube/kube_http.ts";
import { WatchRestarts } from "../kube/watch_restarts.ts";

/** Label on the membership Leases; its value is the configured name. */
export const LABEL_MEMBERSHIP = "aranya.arhat.dev/membership";

/** The live replicas, and this one's share of the keys. */
export interface Membership extends Runnable {
  /** This replica's identity. */
  readonly identity: string;
  /** True while this replica holds its own membership (renewed within the deadline). */
  readonly healthy: boolean;
  /** The live members' identities, sorted (this one included while healthy). */
  members(): string[];
  /** True when `identity` is a live member. */
  isLive(identity: string): boolean;
  /**
   * When the process now behind live member `identity` started holding its membership (wall
   * clock, ms since the epoch; its Lease's acquireTime), or undefined when unknown.
   */
  startedAt(identity: string): number | undefined;
  /** True when `key` is this replica's share (never while not healthy). No I/O. */
  owns(key: string): boolean;
  /**
   * Calls `listener` after the members or this replica's health changed, until the returned
   * function is called.
   */
  onChange(listener: () => void): () => void;
}

/** The only replica: owns every key, no Lease. */
export class StaticMembership implements Membership {
  readonly identity: string;
  readonly healthy = true;
  readonly #ready = readySignal();

  constructor(identity: string) {
    this.identity = identity;
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  members(): string[] {
    return [this.identity];
  }

  isLive(identity: string): boolean {
    return identity === this.identity;
  }

  startedAt(): number | undefined {
    return undefined;
  }

  owns(): boolean {
    return true;
  }

  onChange(): () => void {
    return () => {};
  }

  async run(signal: AbortSignal): Promise<void> {
    this.#ready.resolve();
    if (signal.aborted) return;
    await new Promise<void>((r) => signal.addEventListener("abort", () => r(), { once: true }));
  }
}

/** Options of {@link LeaseMembership}. */
export interface LeaseMembershipOptions {
  /** The transport the member watch lists and watches through. */
  http: KubeHttp;
  coordination: CoordinationApi;
  /** Namespace of the Leases (must exist). */
  namespace: string;
  /** Prefix of the Leases' names and their label's value. */
  name: string;
  /** This replica's identity; a DNS subdomain unique among the replicas. */
  identity: string;
  /** Others consider a member gone this long after its last renewal; whole seconds. */
  leaseDurationMs: number;
  /** No renewal for this long: this replica is not healthy; shorter than leaseDurationMs. */
  renewDeadlineMs: number;
  /** Interval of renewals; shorter than renewDeadlineMs. */
  retryPeriodMs: number;
  log?: Logger;
  /** Clock (ms), injectable for tests. */
  now?: () => number;
}

/** A member's Lease as this replica last saw it change. */
interface Seen {
  resourceVersion: string;
  /** Local time of the change, ms. */
  at: number;
  durationMs: number;
  /** The Lease's acquireTime (wall clock ms; NaN when it has none). */
  acquiredAt: number;
}

/** Membership through one Lease per replica; see the module doc. */
export class LeaseMembership implements Membership {
  readonly identity: string;
  readonly #o: LeaseMembershipOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #ready = readySignal();
  readonly #seen = new Map<string, Seen>();
  readonly #listeners = new Set<() => void>();
  #lastRenew = -Infinity;
  /** This process has written its Lease once (with its acquireTime). */
  #acquired = false;
  #members: string[] = [];
  #healthy = false;

  constructor(opts: LeaseMembershipOptions) {
    this.#o = opts;
    this.identity = opts.identity;
    this.#log = (opts.log ?? nullLogger).with({ identity: opts.identity });
    this.#now = opts.now ?? (() => performance.now());
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  get healthy(): boolean {
    return this.#healthy;
  }

  /** Name of the Lease of member `identity`. */
  leaseName(identity = this.identity): string {
    return `${this.#o.name}-${identity}`;
  }

  members(): string[] {
    return this.#members;
  }

  isLive(identity: string): boolean {
    return this.#members.includes(identity);
  }

  startedAt(identity: string): number | undefined {
    if (!this.isLive(identity)) return undefined;
    const at = this.#seen.get(identity)?.acquiredAt;
    return at === undefined || Number.isNaN(at) ? undefined : at;
  }

  owns(key: string): boolean {
    if (!this.#healthy) return false;
    return ownerOf(key, this.#members) === this.identity;
  }

  onChange(listener: () => void): () => void {
    const own = () => listener();
    this.#listeners.add(own);
    return () => this.#listeners.delete(own);
  }

  /**
   * Holds the membership until `signal` aborts, then deletes its Lease.
   * `ready` resolves once the Lease was written and the others' were listed.
   */
  async run(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    const labelSelector = `${LABEL_MEMBERSHIP}=${o.name}`;
    const informer = new Informer<V1Lease>({
      http: o.http,
      path: `/apis/coordination.k8s.io/v1/namespaces/${o.namespace}/leases`,
      labelSelector,
      log: this.#log,
    });
    const observe = (lease: V1Lease) => {
      const id = lease.spec?.holderIdentity;
      const rv = lease.metadata?.resourceVersion ?? "";
      if (!id || lease.metadata?.name !== this.leaseName(id)) return;
      const before = this.#seen.get(id);
      if (before?.resourceVersion === rv) return;
      const acquiredAt = lease.spec?.acquireTime
        ? new Date(lease.spec.acquireTime).getTime()
        : Number.NaN;
      this.#seen.set(id, {
        resourceVersion: rv,
        at: this.#now(),
        durationMs: (lease.spec?.leaseDurationSeconds ?? 15) * 1000,
        acquiredAt,
      });
      const restarted = before !== undefined && id !== this.identity &&
        !Number.isNaN(acquiredAt) && acquiredAt !== before.acquiredAt;
      if (restarted) this.#log.info("a replica started again under its identity", { member: id });
      // A restart leaves the members as they were; the listeners are told all the same.
      if (!this.#update() && restarted) this.#emit();
    };
    informer.on("add", observe);
    informer.on("update", observe);
    informer.on("delete", (lease: V1Lease) => {
      const id = lease.spec?.holderIdentity;
      if (id && lease.metadata?.name === this.leaseName(id)) this.#seen.delete(id);
      this.#update();
    });
    new WatchRestarts({ signal, log: this.#log }).keep(informer, "membership");
    let lease: V1Lease | undefined;
    let started = false;
    try {
      while (!signal.aborted) {
        try {
          lease = await this.#renew(lease);
          this.#lastRenew = this.#now();
        } catch (err) {
          lease = undefined;
          this.#log.warn("renewing the membership Lease failed", { error: errorMessage(err) });
        }
        if (!started && this.#lastRenew > -Infinity) {
          try {
            // A refused list is told to the restarts, which try again: joined once one listed.
            if (!informer.synced) await informer.start();
            if (informer.synced) {
              started = true;
              this.#update();
              this.#ready.resolve();
              this.#log.info("replica joined", { members: this.#members });
            }
          } catch (err) {
            this.#log.warn("listing the members failed", { error: errorMessage(err) });
          }
        }
        this.#update();
        await sleep(jitter(o.retryPeriodMs), signal).catch(() => {});
      }
    } finally {
      await informer.stop();
      this.#healthy = false;
      this.#members = [];
      this.#emit();
      await this.#leave(lease);
    }
  }

  /** Recomputes the live members and health; tells the listeners of a change (true: told). */
  #update(): boolean {
    const now = this.#now();
    const healthy = now - this.#lastRenew < this.#o.renewDeadlineMs;
    const live = [...this.#seen.entries()]
      .filter(([id, s]) => id !== this.identity && now - s.at < s.durationMs)
      .map(([id]) => id);
    if (healthy) live.push(this.identity);
    live.sort();
    const changed = healthy !== this.#healthy || live.join("\n") !== this.#members.join("\n");
    this.#healthy = healthy;
    this.#members = live;
    if (changed) {
      this.#log.info("replica members changed", { members: live, healthy });
      this.#emit();
    }
    return changed;
  }

  #emit(): void {
    for (const l of [...this.#listeners]) {
      try {
        l();
      } catch (err) {
        this.#log.warn("a membership listener failed", { error: errorMessage(err) });
      }
    }
  }

  /** Creates or renews this replica's Lease (`last`: as last written, to skip a read). */
  async #renew(last: V1Lease | undefined): Promise<V1Lease> {
    const o = this.#o;
    const name = this.leaseName();
    const now = microTime(Date.now());
    const spec = {
      holderIdentity: this.identity,
      leaseDurationSeconds: Math.round(o.leaseDurationMs / 1000),
      renewTime: now,
      // This process's start, written once (a restart of this identity writes a new one).
      ...(this.#acquired ? {} : { acquireTime: now }),
    };
    let current = last;
    for (let attempt = 1;; attempt++) {
      try {
        if (!current) {
          try {
            current = await o.coordination.readNamespacedLease({ name, namespace: o.namespace });
          } catch (err) {
            if (!isNotFound(err)) throw err;
            const created = await o.coordination.createNamespacedLease({
              namespace: o.namespace,
              body: {
                apiVersion: "coordination.k8s.io/v1",
                kind: "Lease",
                metadata: { name, namespace: o.namespace, labels: { [LABEL_MEMBERSHIP]: o.name } },
                spec: { acquireTime: now, ...spec },
              },
            });
            this.#acquired = true;
            return created;
          }
        }
        const replaced = await o.coordination.replaceNamespacedLease({
          name,
          namespace: o.namespace,
          body: { ...current, spec: { ...current.spec, ...spec } },
        });
        this.#acquired = true;
        return replaced;
      } catch (err) {
        // Our own Lease changed under us (a restart of this identity): read it again.
        if ((apiStatus(err) === 409 || isNotFound(err)) && attempt < 3) {
          current = undefined;
          continue;
        }
        throw fromApiError(`Renewing the membership Lease "${o.namespace}/${name}"`, err);
      }
    }
  }

  /** Deletes this replica's Lease (as last written), so the others take its share at once. */
  async #leave(lease: V1Lease | undefined): Promise<void> {
    const uid = lease?.metadata?.uid;
    if (!uid) return;
    try {
      await this.#o.coordination.deleteNamespacedLease({
        name: this.leaseName(),
        namespace: this.#o.namespace,
        body: { preconditions: { uid } },
      });
      this.#log.info("replica left");
    } catch (err) {
      if (!isNotFound(err)) {
        this.#log.warn("deleting the membership Lease failed", { error: errorMessage(err) });
      }
    }
  }
}

/** Up to 10 % more than `ms`, so replicas do not renew in step. */
function jitter(ms: number): number {
  return ms * (1 + Math.random() * 0.1);
}

/**
 * The member that owns `key`: the highest score of FNV-1a over
 * "<member>\n<key>" (rendezvous hashing). Undefined without members.
 */
export function ownerOf(key: string, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const m of members) {
    const score = fnv1a(`${m}\n${key}`);
    if (score > bestScore || (score === bestScore && best !== undefined && m < best)) {
      best = m;
      bestScore = score;
    }
  }
  return best;
}

/** 32-bit FNV-1a of `s`'s UTF-16 code units, mixed once more so close inputs spread. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return h >>> 0;
}
