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
 *   deadline, before), or the node Lease itself expired, or the holder
 *   cleared it;
 * - a renewal that finds another holder reports the loss: the caller closes
 *   the device's link at once.
 *
 * @module
 */
import type { V1Lease } from "@kubernetes/client-node";
import { type CoordinationApi, type CoreApi, microTime } from "../kube/apis.ts";
import { errorMessage } from "../../common/errors.ts";
import { type Logger, nullLogger } from "../../common/log.ts";
import { sleep } from "../../common/backoff.ts";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";
import type { Membership } from "./membership.ts";

/** Where node Leases live (as the kubelet's). */
export const NODE_LEASE_NAMESPACE = "kube-node-lease";

/** Options of {@link NodeLease}. */
export interface NodeLeaseOptions {
  coordination: CoordinationApi;
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
   * Takes the Lease for this replica, waiting (re-reading every `retryMs`)
   * while another live replica holds it unexpired. "node-gone": there is no
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
        this.#log.info("waiting for the replica that holds the device to let go", { holder });
      }
      await sleep(retryMs, signal).catch(() => {});
    }
    return "aborted";
  }

  /**
   * Renews the Lease. False: another replica holds it now (stop serving the
   * device). Throws when the API refuses or cannot be reached.
   */
  async renew(leaseSeconds: number): Promise<boolean> {
    const me = this.#o.membership.identity;
    for (let attempt = 1;; attempt++) {
      const lease = this.#lease ?? await this.#read();
      if (!lease) {
        // Gone under a live link: its Node was recreated (the Lease went with the old one), or
        // the device is being deleted. The Node is read, not taken from the cache, so a Lease is
        // only made for a Node that exists.
        const made = await this.#create(leaseSeconds, false);
        if (made === "node-gone") return true; // the device is being removed: nothing to renew
        if (made) return true;
        continue;
      }
      if ((lease.spec?.holderIdentity ?? "") !== me) {
        this.#lease = undefined;
        return false;
      }
      if (await this.#write(lease, leaseSeconds, false)) return true;
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
    const renewed = lease.spec?.renewTime ? new Date(lease.spec.renewTime).getTime() : 0;
    const seconds = lease.spec?.leaseDurationSeconds ?? 40;
    return renewed + seconds * 1000 < this.#now().getTime();
  }

  async #read(): Promise<V1Lease | undefined> {
    try {
      return await this.#o.coordination.readNamespacedLease({
        name: this.#o.node,
        namespace: NODE_LEASE_NAMESPACE,
      });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw fromApiError(`Reading Lease "${NODE_LEASE_NAMESPACE}/${this.#o.node}"`, err);
    }
  }

  /** Replaces `lease` with this replica as holder; false when it changed or went meanwhile. */
  async #write(lease: V1Lease, leaseSeconds: number, transition: boolean): Promise<boolean> {
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
      this.#lease = await this.#o.coordination.replaceNamespacedLease({
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
  async #create(leaseSeconds: number, cached = true): Promise<boolean | "node-gone"> {
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
      this.#lease = await this.#o.coordination.createNamespacedLease({
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
