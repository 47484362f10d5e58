/**
 * Membership: rendezvous hashing (pure), and LeaseMembership against the real
 * control plane: replicas see each other, split the keys without overlap, a
 * replica that leaves deletes its Lease (the others take its share at once), a
 * crashed one is dropped after its lease duration, and one that cannot renew
 * stops owning anything at its renew deadline.
 */
import assert from "node:assert/strict";
import { eventually, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { LABEL_MEMBERSHIP, LeaseMembership, ownerOf, StaticMembership } from "./membership.ts";
import { testClients } from "../kube/testing/test_clients.ts";

Deno.test("ownerOf: one owner per key, an even spread, and a leaving member moves only its keys", () => {
  const keys = Array.from({ length: 9000 }, (_, i) => `ns-${i % 7}/device-${i}`);
  const three = ["aranya-a", "aranya-b", "aranya-c"];
  const owners = keys.map((k) => ownerOf(k, three)!);
  for (const m of three) {
    const share = owners.filter((o) => o === m).length / keys.length;
    assert.ok(share > 0.28 && share < 0.39, `${m} owns ${share}`);
  }
  // Deterministic, and independent of the members' order.
  assert.deepEqual(keys.map((k) => ownerOf(k, [...three].reverse())), owners);
  const two = ["aranya-a", "aranya-c"];
  keys.forEach((k, i) => {
    if (owners[i] !== "aranya-b") assert.equal(ownerOf(k, two), owners[i], k);
  });
  assert.equal(ownerOf("x/y", []), undefined);
  assert.equal(new StaticMembership("only").owns(), true);
});

Deno.test({
  name:
    "LeaseMembership: replicas share the keys, leave at once, and drop a crashed or cut-off one",
  // client-node's informer keeps a watch and timers until stopped; all stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const kc = testClients(cluster.kubeconfig);
    const coordination = kc.coordination;
    const namespace = uniqueName("members");
    const name = uniqueName("aranya");
    const running: Promise<void>[] = [];
    const stops: AbortController[] = [];
    const start = (identity: string, client = coordination) => {
      const m = new LeaseMembership({
        http: kc.http,
        coordination: client,
        namespace,
        name,
        identity,
        leaseDurationMs: 3000,
        renewDeadlineMs: 2000,
        retryPeriodMs: 500,
      });
      const ac = new AbortController();
      stops.push(ac);
      running.push(m.run(ac.signal));
      return { m, ac };
    };
    // A replica with this client cannot delete its Lease, as if killed.
    const noDelete = new Proxy(coordination, {
      get: (target, prop, receiver) =>
        prop === "deleteNamespacedLease"
          ? () => Promise.reject(new Error("killed"))
          : Reflect.get(target, prop, receiver),
    });
    const keys = Array.from({ length: 300 }, (_, i) => `ns/device-${i}`);
    try {
      await cluster.kubectlOk(["create", "namespace", namespace]);
      const a = start("a");
      const b = start("b");
      await Promise.all([a.m.ready, b.m.ready]);

      await t.step("both see both; every key is owned by exactly one", async () => {
        for (const x of [a, b]) {
          await eventually(
            "two members",
            () => Promise.resolve(x.m.members().join() === "a,b" || undefined),
          );
        }
        for (const k of keys) assert.equal(Number(a.m.owns(k)) + Number(b.m.owns(k)), 1, k);
        assert.ok(keys.some((k) => a.m.owns(k)) && keys.some((k) => b.m.owns(k)));
        const lease = JSON.parse(
          await cluster.kubectlOk(["get", "lease", `${name}-a`, "-n", namespace, "-o", "json"]),
        );
        assert.equal(lease.spec.holderIdentity, "a");
        assert.equal(lease.metadata.labels[LABEL_MEMBERSHIP], name);
      });

      await t.step(
        "a replica that leaves deletes its Lease; the other owns everything",
        async () => {
          let changes = 0;
          b.m.onChange(() => changes++);
          a.ac.abort();
          await running[0];
          const r = await cluster.kubectl(["get", "lease", `${name}-a`, "-n", namespace]);
          assert.match(r.stderr, /not found/);
          // Far sooner than a's lease duration would allow.
          await eventually(
            "b alone",
            () => Promise.resolve(b.m.members().join() === "b" || undefined),
            2500,
          );
          assert.ok(changes >= 1);
          for (const k of keys) {
            assert.ok(b.m.owns(k), k);
          }
          assert.equal(b.m.isLive("a"), false);
        },
      );

      await t.step(
        "a crashed replica (Lease left behind) is dropped after its lease duration",
        async () => {
          // c cannot delete its Lease, as if killed.
          const c = start("c", noDelete);
          await c.m.ready;
          await eventually("b sees c", () => Promise.resolve(b.m.isLive("c") || undefined));
          c.ac.abort();
          await running[2];
          const stopped = Date.now();
          await eventually(
            "b drops c",
            () => Promise.resolve(!b.m.isLive("c") || undefined),
            10_000,
          );
          const after = Date.now() - stopped;
          assert.ok(after >= 1500, `dropped after ${after} ms, not before the lease ran out`);
        },
      );

      await t.step("a replica that cannot renew stops owning at its renew deadline", async () => {
        let cut = false;
        const flaky = new Proxy(coordination, {
          get: (target, prop, receiver) =>
            cut && typeof prop === "string" && /Lease$/.test(prop)
              ? () => Promise.reject(new Error("API unreachable"))
              : Reflect.get(target, prop, receiver),
        });
        const d = start("d", flaky);
        await d.m.ready;
        await eventually("d healthy", () => Promise.resolve(d.m.healthy || undefined));
        assert.ok(keys.some((k) => d.m.owns(k)));
        cut = true;
        await eventually("d not healthy", () => Promise.resolve(!d.m.healthy || undefined), 10_000);
        assert.ok(keys.every((k) => !d.m.owns(k)), "owns nothing");
      });

      await t.step(
        "a replica killed and started again under its identity: still a member, its new start seen and told",
        async () => {
          const first = start("e", noDelete);
          await first.m.ready;
          const started1 = await eventually(
            "b sees e's start",
            () => Promise.resolve(b.m.startedAt("e")),
          );
          assert.ok(Math.abs(started1 - Date.now()) < 10_000, "a wall clock time");
          first.ac.abort(); // killed: its Lease stays
          await running[running.length - 1];
          let told = 0;
          b.m.onChange(() => told++);
          const again = start("e");
          await again.m.ready;
          const started2 = await eventually(
            "b sees e's new start",
            () => Promise.resolve(b.m.startedAt("e") !== started1 ? b.m.startedAt("e") : undefined),
          );
          assert.ok(started2! > started1, "the new start is later");
          assert.ok(b.m.isLive("e"), "still a member throughout");
          assert.ok(told >= 1, "b's listeners were told");
          assert.equal(b.m.startedAt("nobody"), undefined);
        },
      );
    } finally {
      for (const ac of stops) ac.abort();
      await Promise.allSettled(running);
      await cluster.kubectl(["delete", "namespace", namespace, "--wait=false"]);
      await cluster.release();
    }
  },
});
