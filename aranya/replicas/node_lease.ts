/**
 * A device's owner: the replica named as holder of its Node's Lease in
 * kube-node-lease (the heartbeat the node lifecycle controller reads). The
 * replica holding the device's link takes the Lease, renews it while the
 * link lives, and clears the holder when the link closes. No extra object
 * and no extra write: the heartbeat is the ownership record.
 *
 * Fencing (two replicas never serve one device):
 * - every write is a replace carrying the resourceVersion read, so of two
 *   replicas racing one gets 409 Conflict and reads again;
 * - a replica takes the Lease from another only when that one is not a live
 *   member (its membership Lease ran out: it stopped serving at its renew
 *   deadline, before), or the holder's process started after the Lease's last
 *   renewal (it died and came back under the same identity, and a process
 *   renews a node Lease when it takes one: the new process holds nothing of
 *   the old one's), or the node Lease itself expired, or the holder cleared
 *   it;
 * - a renewal that finds another holder reports the loss: the caller closes
 *   the device's link at once.
 *
 * @module
 */
import type { V1Lease } from "@kubernetes/client-node";
import { type CoordinationApi, type CoreApi, microTime } from "../kube/apis.ts";
import { errorMessage } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";
import type { Membership } from "./membership.ts";

/** Where node Leases live (as the kubelet's). */
export const NODE_LEASE_NAMESPACE = "kube-node-lease";

/** Options of {@link NodeLease}. */
export interface NodeLeaseOptions {
  /** For taking and releasing the Lease. */
  coordination: CoordinationApi;
  /** For renewing it: a client whose requests go first (default: `coordination`). */
  heartbeats?: CoordinationApi;
  /** For the Node's uid (the Lease's owner reference). */
  core: CoreApi;
  /** The Node, which is the Lease's name. */
  node: string;
  membership: Membership;
  /** The Node's uid as cached (saves a read when the Lease is created). */
  cachedNodeUid?: () => string | undefined;
  log?: Logger;
  /** Wall clock, injectable for tests. */
  now?: () => Date;
}

/** What {@link NodeLease.acquire} found. */
export type AcquireResult = "held" | "node-gone" | "aborted";

/** One Node's Lease as seen by this replica; see the module doc. */
export class NodeLease {
  readonly #o: NodeLeaseOptions;
  readonly #log: Logger;
  readonly #now: () => Date;
  /** The Lease as this replica last wrote it (skips a read per renewal). */
  #lease: V1Lease | undefined;

  constructor(opts: NodeLeaseOptions) {
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({ node: opts.node });
    this.#now = opts.now ?? (() => new Date());
  }

  /** The replica that held the Lease when this one took it (undefined: none). */
  previousHolder: string | undefined;

  /**
   * Takes the Lease for this replica, waiting while another live replica
   * holds it unexpired (re-reading it when the members change, when it
   * expires, and after a back-off from `retryMs` up to 8 times it). "node-gone": there is no
   * Node (the device is being removed), so no Lease is made. Throws only
   * when the API refuses something other than a conflict.
   */
  async acquire(
    signal: AbortSignal,
    leaseSeconds: number,
    retryMs = 1000,
    /** The Node never had a Lease (never connected): create it without a read first. */
    fresh = false,
  ): Promise<AcquireResult> {
    const me = this.#o.membership.identity;
    let waitingFor: string | undefined;
    let waits = 0;
    if (fresh) {
      const made = await this.#create(leaseSeconds);
      if (made === "node-gone") return made;
      if (made) return "held";
    }
    while (!signal.aborted) {
      const lease = await this.#read();
      if (!lease) {
        const made = await this.#create(leaseSeconds);
        if (made === "node-gone") return made;
        if (made) return "held";
        continue; // made meanwhile by someone else
      }
      const holder = lease.spec?.holderIdentity ?? "";
      if (this.#free(lease, holder)) {
        if (await this.#write(lease, leaseSeconds, holder !== me)) {
          this.previousHolder = holder && holder !== me && holder !== this.#o.node
            ? holder
            : undefined;
          if (this.previousHolder) {
            this.#log.info("took over the device from another replica", {
              from: this.previousHolder,
            });
          }
          return "held";
        }
        continue;
      }
      if (waitingFor !== holder) {
        waitingFor = holder;
        waits = 0;
        this.#log.info("waiting for the replica that holds the device to let go", { holder });
      }
      // Read again when the holder may have let go: at once when the members change (the holder
      // left, or its process started again), when the Lease expires, else after a back-off from
      // `retryMs` to 8 times it (the holder clears the Lease when its link closes). Not every `retryMs`: when a replica dies,
      // all its devices dial the others at once and would each read their Lease every second
      // until its membership runs out, thousands of reads delaying the renewals of every other
      // device.
      const expires = this.#expiresAt(lease) - this.#now().getTime();
      const backoff = retryMs * 2 ** Math.min(waits++, 3);
      await this.#membersChanged(Math.max(0, Math.min(backoff, expires)), signal);
    }
    return "aborted";
  }

  /** Resolves when the members change, after `ms`, or when `signal` aborts. Never rejects. */
  #membersChanged(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        off();
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      const off = this.#o.membership.onChange(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  /** When `lease` was last renewed, ms since the epoch (0: never). */
  #renewedAt(lease: V1Lease): number {
    return lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : 0;
  }

  /** When `lease` expires, ms since the epoch (by its renewTime and duration). */
  #expiresAt(lease: V1Lease): number {
    return this.#renewedAt(lease) + (lease.spec?.leaseDurationSeconds ?? 40) * 1000;
  }

  /**
   * Renews the Lease. False: another replica holds it now (stop serving the
   * device). Throws when the API refuses or cannot be reached.
   */
  async renew(leaseSeconds: number): Promise<boolean> {
    const me = this.#o.membership.identity;
    const api = this.#o.heartbeats ?? this.#o.coordination;
    for (let attempt = 1;; attempt++) {
      const lease = this.#lease ?? await this.#read(api);
      if (!lease) {
        // Gone under a live link: its Node was recreated (the Lease went with the old one), or
        // the device is being deleted. The Node is read, not taken from the cache, so a Lease is
        // only made for a Node that exists.
        const made = await this.#create(leaseSeconds, false, api);
        if (made === "node-gone") return true; // the device is being removed: nothing to renew
        if (made) return true;
        continue;
      }
      if ((lease.spec?.holderIdentity ?? "") !== me) {
        this.#lease = undefined;
        return false;
      }
      if (await this.#write(lease, leaseSeconds, false, api)) return true;
      if (attempt >= 4) {
        throw fromApiError(
          `Renewing Lease "${NODE_LEASE_NAMESPACE}/${this.#o.node}"`,
          new Error("it kept changing"),
        );
      }
    }
  }

  /**
   * Clears the holder when this replica still holds the Lease, so another
   * replica the device dials next takes it at once. Never throws.
   */
  async release(): Promise<void> {
    const lease = this.#lease;
    this.#lease = undefined;
    if (!lease || lease.spec?.holderIdentity !== this.#o.membership.identity) return;
    try {
      await this.#o.coordination.replaceNamespacedLease({
        name: this.#o.node,
        namespace: NODE_LEASE_NAMESPACE,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: "" } },
      });
    } catch (err) {
      // Changed meanwhile (taken, or the Node and its Lease are gone): nothing to release.
      if (apiStatus(err) !== 409 && !isNotFound(err)) {
        this.#log.warn("releasing the node Lease failed", { error: errorMessage(err) });
      }
    }
  }

  /** True when this replica may take `lease` (see the module doc). */
  #free(lease: V1Lease, holder: string): boolean {
    const me = this.#o.membership.identity;
    // The kubelet's convention (and an aranya before replicas) writes the node's own name.
    if (holder === "" || holder === me || holder === this.#o.node) return true;
    if (!this.#o.membership.isLive(holder)) return true;
    const started = this.#o.membership.startedAt(holder);
    if (started !== undefined && this.#renewedAt(lease) < started) return true;
    return this.#expiresAt(lease) < this.#now().getTime();
  }

  async #read(api = this.#o.coordination): Promise<V1Lease | undefined> {
    try {
      return await api.readNamespacedLease({
        name: this.#o.node,
        namespace: NODE_LEASE_NAMESPACE,
      });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw fromApiError(`Reading Lease "${NODE_LEASE_NAMESPACE}/${this.#o.node}"`, err);
    }
  }

  /** Replaces `lease` with this replica as holder; false when it changed or went meanwhile. */
  async #write(
    lease: V1Lease,
    leaseSeconds: number,
    transition: boolean,
    api = this.#o.coordination,
  ): Promise<boolean> {
    const now = microTime(this.#now().getTime());
    const spec = {
      ...lease.spec,
      holderIdentity: this.#o.membership.identity,
      leaseDurationSeconds: leaseSeconds,
      renewTime: now,
      ...(transition
        ? { acquireTime: now, leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1 }
        : {}),
    };
    try {
      this.#lease = await api.replaceNamespacedLease({
        name: this.#o.node,
        namespace: NODE_LEASE_NAMESPACE,
        body: { ...lease, spec },
      });
      return true;
    } catch (err) {
      this.#lease = undefined;
      // Changed or gone meanwhile (a Node recreated takes its Lease along): read it again.
      if (apiStatus(err) === 409 || isNotFound(err)) return false;
      throw fromApiError(`Renewing Lease "${NODE_LEASE_NAMESPACE}/${this.#o.node}"`, err);
    }
  }

  /**
   * Creates the Lease held by this replica, owned by the Node as the kubelet
   * does it (the garbage collector removes it with the Node, even one a late
   * renewal made). False: made meanwhile by someone else.
   */
  async #create(
    leaseSeconds: number,
    cached = true,
    api = this.#o.coordination,
  ): Promise<boolean | "node-gone"> {
    const name = this.#o.node;
    let uid = cached ? this.#o.cachedNodeUid?.() : undefined;
    if (!uid) {
      try {
        uid = (await this.#o.core.readNode({ name })).metadata?.uid;
      } catch (err) {
        if (isNotFound(err)) return "node-gone";
        throw fromApiError(`Reading Node "${name}"`, err);
      }
    }
    const now = microTime(this.#now().getTime());
    try {
      this.#lease = await api.createNamespacedLease({
        namespace: NODE_LEASE_NAMESPACE,
        body: {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: {
            name,
            namespace: NODE_LEASE_NAMESPACE,
            ownerReferences: [{ apiVersion: "v1", kind: "Node", name, uid: uid! }],
          },
          spec: {
            holderIdentity: this.#o.membership.identity,
            leaseDurationSeconds: leaseSeconds,
            acquireTime: now,
            renewTime: now,
          },
        },
      });
      return true;
    } catch (err) {
      if (apiStatus(err) === 409) return false;
      throw fromApiError(`Creating Lease "${NODE_LEASE_NAMESPACE}/${name}"`, err);
    }
  }
}
