/**
 * NodeLease against the real control plane: the first replica takes a free
 * Lease (creating it, owned by the Node); a second one waits while the holder
 * is a live member with an unexpired Lease, and takes over once the holder is
 * not a member any more; the old holder's renewal then reports the loss; a
 * release lets another replica take it at once; a waiting replica reads again
 * when the members change, not only at its re-read; a live holder whose
 * process started after the Lease's last renewal (it restarted) holds nothing:
 * the waiting replica takes it when told; no Node, no Lease.
 */
import assert from "node:assert/strict";
import { uniqueName, useCluster } from "@aranya/e2e/fixtures";
import type { Membership } from "./membership.ts";
import { NODE_LEASE_NAMESPACE, NodeLease } from "./node_lease.ts";
import { testClients } from "../kube/testing/test_clients.ts";

/** Live members the test sets; `changed()` tells the memberships' listeners. */
class Members {
  readonly live: Set<string>;
  /** When each member's process started (wall clock ms); unset: unknown. */
  readonly started = new Map<string, number>();
  readonly #listeners = new Set<() => void>();
  constructor(live: string[]) {
    this.live = new Set(live);
  }
  /** How many listeners wait now. */
  get listening(): number {
    return this.#listeners.size;
  }
  changed(): void {
    for (const l of [...this.#listeners]) l();
  }
  /** A membership of `identity` seeing these members. */
  of(identity: string): Membership {
    return {
      identity,
      healthy: true,
      ready: Promise.resolve(),
      members: () => [...this.live].sort(),
      isLive: (id) => this.live.has(id),
      startedAt: (id) => this.started.get(id),
      owns: () => true,
      onChange: (l) => {
        this.#listeners.add(l);
        return () => this.#listeners.delete(l);
      },
      run: () => Promise.resolve(),
    };
  }
}

Deno.test({
  name: "NodeLease: take, wait for a live holder, take over from a gone one, lose, release",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const coordination = kc.coordination;
    const node = uniqueName("lease-node");
    const members = new Members(["r0", "r1"]);
    const live = members.live;
    const lease = (identity: string) =>
      new NodeLease({ coordination, core, node, membership: members.of(identity) });
    const holder = async () => {
      const l = await coordination.readNamespacedLease({
        name: node,
        namespace: NODE_LEASE_NAMESPACE,
      });
      return l.spec?.holderIdentity ?? "";
    };
    const ac = new AbortController();
    try {
      await t.step("no Node: nothing is made", async () => {
        assert.equal(await lease("r0").acquire(ac.signal, 40), "node-gone");
      });
      await cluster.kubectlOk(
        ["apply", "-f", "-"],
        JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: node } }),
      );
      const r0 = lease("r0");
      const r1 = lease("r1");
      await t.step("a free Lease is created, held and owned by the Node", async () => {
        assert.equal(await r0.acquire(ac.signal, 40), "held");
        const l = await coordination.readNamespacedLease({
          name: node,
          namespace: NODE_LEASE_NAMESPACE,
        });
        assert.equal(l.spec?.holderIdentity, "r0");
        assert.equal(l.spec?.leaseDurationSeconds, 40);
        assert.equal(l.metadata?.ownerReferences?.[0]?.kind, "Node");
        assert.equal(await r0.renew(40), true);
      });
      await t.step("another replica waits while the holder is live, then takes over", async () => {
        let result: string | undefined;
        const taking = r1.acquire(ac.signal, 40, 100).then((r) => result = r);
        // While r0 is a live member with a fresh Lease, r1 keeps waiting (it re-reads every
        // 100 ms); r0 renews meanwhile.
        for (let i = 0; i < 5; i++) {
          assert.equal(await r0.renew(40), true);
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(result, undefined, "still waiting");
        assert.equal(await holder(), "r0");
        live.delete("r0"); // r0's membership ran out
        assert.equal(await taking, "held");
        assert.equal(members.listening, 0, "the wait stopped listening to the members");
        assert.equal(await holder(), "r1");
        assert.equal(r1.previousHolder, "r0");
        const l = await coordination.readNamespacedLease({
          name: node,
          namespace: NODE_LEASE_NAMESPACE,
        });
        assert.equal(l.spec?.leaseTransitions, 1);
      });
      await t.step("the old holder's renewal reports the loss and writes nothing", async () => {
        assert.equal(await r0.renew(40), false);
        assert.equal(await holder(), "r1");
        await r0.release(); // not its own any more: a no-op
        assert.equal(await holder(), "r1");
      });
      await t.step("a release lets another live replica take it at once", async () => {
        live.add("r0");
        await r1.release();
        assert.equal(await holder(), "");
        const r0again = lease("r0");
        assert.equal(await r0again.acquire(ac.signal, 40, 100), "held");
        assert.equal(await holder(), "r0");
        assert.equal(r0again.previousHolder, undefined);
      });
      await t.step("a waiting replica reads again when the members change", async () => {
        // r0 holds it; r1 waits with a re-read far beyond the test's time: it takes the Lease
        // only because the change of members wakes it (r0 left).
        const r1again = lease("r1");
        const taking = r1again.acquire(ac.signal, 40, 3_600_000);
        while (members.listening === 0) await new Promise((r) => setTimeout(r, 20));
        live.delete("r0");
        members.changed();
        assert.equal(await taking, "held");
        assert.equal(await holder(), "r1");
        assert.equal(members.listening, 0);
      });
      await t.step(
        "a live holder that started again after its last renewal holds nothing: taken when told",
        async () => {
          // r1 holds it, renewed now; r0 waits (re-read far away). r1 stays a live member, so
          // only its new start can free the Lease.
          live.add("r0");
          const r1holder = lease("r1");
          assert.equal(await r1holder.acquire(ac.signal, 40), "held");
          assert.equal(await r1holder.renew(40), true);
          members.started.set("r1", Date.now() - 60_000); // started before: it holds the Lease
          const r0waits = lease("r0");
          let result: string | undefined;
          const taking = r0waits.acquire(ac.signal, 40, 3_600_000).then((r) => result = r);
          while (members.listening === 0) await new Promise((r) => setTimeout(r, 20));
          members.changed(); // told, but nothing changed: keeps waiting
          await new Promise((r) => setTimeout(r, 300));
          assert.equal(result, undefined, "still waiting on a holder that did not restart");
          members.started.set("r1", Date.now() + 1); // its process came back after the renewal
          members.changed();
          let timer: ReturnType<typeof setTimeout> | undefined;
          const timeout = new Promise((r) => timer = setTimeout(() => r("still waiting"), 10_000));
          assert.equal(await Promise.race([taking, timeout]), "held", "taken within 10 s");
          clearTimeout(timer);
          assert.equal(await holder(), "r0");
          assert.equal(r0waits.previousHolder, "r1");
        },
      );
    } finally {
      ac.abort();
      await cluster.kubectl(["delete", "node", node, "--ignore-not-found"]);
      await cluster.kubectl([
        "delete",
        "lease",
        "-n",
        NODE_LEASE_NAMESPACE,
        node,
        "--ignore-not-found",
      ]);
      await cluster.release();
    }
  },
});
