/**
 * Leader election against the real control plane, with short timings
 * (lease 3 s, renew deadline 2 s, retry 0.5 s): exactly one of two replicas
 * leads, a graceful shutdown hands over at once, a crash hands over after the
 * lease duration, a stolen Lease or an unreachable API ends leading.
 */
import assert from "node:assert/strict";
import type { CoordinationV1Api, V1Lease } from "@kubernetes/client-node";
import { InvalidInputError } from "../../common/errors.ts";
import { type ClusterHandle, eventually, uniqueName, useCluster } from "../../e2e/fixtures.ts";
import { loadKubeConfig, makeKubeClients } from "../kube/client.ts";
import { TokenBucket } from "../kube/rate_limiter.ts";
import { LeaseElector, type LeaseElectorOptions, StaticLeader } from "./lease_elector.ts";

const TIMINGS = { leaseDurationMs: 3000, renewDeadlineMs: 2000, retryPeriodMs: 500 };

/** One replica: its elector, its run, and what its leading callback saw. */
interface Replica {
  elector: LeaseElector;
  ac: AbortController;
  running: Promise<void>;
  /** Start times (performance.now()) of each leading term. */
  terms: number[];
  /** The signal of each term. */
  signals: AbortSignal[];
  changes: boolean[];
}

function start(
  coordination: CoordinationV1Api,
  ns: string,
  name: string,
  identity: string,
  extra: Partial<LeaseElectorOptions> = {},
  work?: (signal: AbortSignal) => Promise<void>,
): Replica {
  const changes: boolean[] = [];
  const elector = new LeaseElector({
    coordination,
    namespace: ns,
    name,
    identity,
    ...TIMINGS,
    onChange: (v) => changes.push(v),
    ...extra,
  });
  const r: Replica = {
    elector,
    ac: new AbortController(),
    running: Promise.resolve(),
    terms: [],
    signals: [],
    changes,
  };
  elector.onLeading((signal) => {
    r.terms.push(performance.now());
    r.signals.push(signal);
    return work
      ? work(signal)
      : new Promise((resolve) => signal.addEventListener("abort", () => resolve()));
  });
  r.running = elector.run(r.ac.signal);
  return r;
}

async function readLease(cluster: ClusterHandle, ns: string, name: string): Promise<V1Lease> {
  return JSON.parse(await cluster.kubectlOk(["get", "lease", name, "-n", ns, "-o", "json"]));
}

async function setup() {
  const cluster = await useCluster();
  const ns = uniqueName("leader");
  await cluster.kubectlOk(["create", "namespace", ns]);
  const kc = loadKubeConfig({ kubeconfig: cluster.kubeconfig, env: {} });
  const { coordination } = makeKubeClients(kc, {
    limiter: new TokenBucket({ qps: 50, burst: 100 }),
  });
  return {
    cluster,
    ns,
    coordination,
    async cleanup(...replicas: Replica[]) {
      for (const r of replicas) r.ac.abort();
      await Promise.allSettled(replicas.map((r) => r.running));
      await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
      await cluster.release();
    },
  };
}

Deno.test("exactly one of two replicas leads; a graceful shutdown hands over at once", async () => {
  const env = await setup();
  const name = uniqueName("lease");
  const a = start(env.coordination, env.ns, name, "replica-a");
  const b = start(env.coordination, env.ns, name, "replica-b");
  try {
    await Promise.all([a.elector.ready, b.elector.ready]);
    const [leader, standby] = await eventually("one leader", () =>
      Promise.resolve(
        a.elector.isLeader ? [a, b] : b.elector.isLeader ? [b, a] : undefined,
      ));
    // For a while (several renewals), never both.
    const until = performance.now() + 2000;
    while (performance.now() < until) {
      assert.ok(!(a.elector.isLeader && b.elector.isLeader), "both lead");
      assert.ok(a.elector.isLeader || b.elector.isLeader, "none leads");
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(leader.terms.length, 1);
    assert.equal(standby.terms.length, 0);
    const id = leader === a ? "replica-a" : "replica-b";
    assert.equal(standby.elector.leader, id);
    const lease = await readLease(env.cluster, env.ns, name);
    assert.equal(lease.spec?.holderIdentity, id);
    assert.equal(lease.spec?.leaseDurationSeconds, 3);
    assert.match(String(lease.spec?.renewTime), /\.\d{6}Z$/);
    assert.equal(lease.spec?.leaseTransitions, 0);
    assert.deepEqual(leader.changes, [true]);

    // Graceful shutdown: the leader's work stops, it releases, the standby takes over at once.
    const stoppedAt = performance.now();
    leader.ac.abort();
    await leader.running;
    assert.ok(leader.signals[0]!.aborted);
    assert.equal(leader.elector.isLeader, false);
    assert.deepEqual(leader.changes, [true, false]);
    await eventually(
      "the standby leads",
      () => Promise.resolve(standby.elector.isLeader || undefined),
      10_000,
    );
    const tookMs = standby.terms[0]! - stoppedAt;
    assert.ok(tookMs < TIMINGS.leaseDurationMs, `takeover took ${tookMs.toFixed(0)} ms`);
    const after = await readLease(env.cluster, env.ns, name);
    assert.equal(after.spec?.holderIdentity, standby === a ? "replica-a" : "replica-b");
    assert.equal(after.spec?.leaseTransitions, 1);
  } finally {
    await env.cleanup(a, b);
  }
});

Deno.test("without a release (a crash), the standby takes over after the lease duration", async () => {
  const env = await setup();
  const name = uniqueName("lease");
  const a = start(env.coordination, env.ns, name, "crashy", { releaseOnShutdown: false });
  let b: Replica | undefined;
  try {
    await eventually("a leads", () => Promise.resolve(a.elector.isLeader || undefined));
    b = start(env.coordination, env.ns, name, "standby");
    await b.elector.ready;
    assert.equal(b.elector.isLeader, false);
    const stoppedAt = performance.now();
    a.ac.abort();
    await a.running;
    assert.equal((await readLease(env.cluster, env.ns, name)).spec?.holderIdentity, "crashy");
    await eventually("b leads", () => Promise.resolve(b!.elector.isLeader || undefined), 15_000);
    const tookMs = b.terms[0]! - stoppedAt;
    // b saw the record when it started (before a stopped), so it waits at most the lease
    // duration from then, plus a retry period with jitter.
    assert.ok(tookMs >= 1500, `took over after only ${tookMs.toFixed(0)} ms`);
    assert.ok(tookMs < TIMINGS.leaseDurationMs + 1000, `took over after ${tookMs.toFixed(0)} ms`);
  } finally {
    await env.cleanup(a, ...(b ? [b] : []));
  }
});

Deno.test("a leader whose Lease is taken by another writer stops leading, then contests again", async () => {
  const env = await setup();
  const name = uniqueName("lease");
  const a = start(env.coordination, env.ns, name, "victim");
  try {
    await eventually("a leads", () => Promise.resolve(a.elector.isLeader || undefined));
    const now = new Date().toISOString().replace(/Z$/, "000Z");
    await env.cluster.kubectlOk([
      "patch",
      "lease",
      name,
      "-n",
      env.ns,
      "--type=merge",
      "-p",
      JSON.stringify({
        spec: { holderIdentity: "thief", renewTime: now, leaseDurationSeconds: 3 },
      }),
    ]);
    const stolenAt = performance.now();
    await eventually(
      "the leading signal aborts",
      () => Promise.resolve(a.signals[0]!.aborted || undefined),
      10_000,
    );
    const tookMs = performance.now() - stolenAt;
    assert.ok(tookMs < 1500, `noticed after ${tookMs.toFixed(0)} ms`);
    assert.match(String(a.signals[0]!.reason), /Leadership lost: the Lease is held by "thief"/);
    assert.equal(a.elector.isLeader, false);
    assert.equal(a.elector.leader, "thief");
    assert.equal((await readLease(env.cluster, env.ns, name)).spec?.holderIdentity, "thief");
    // The thief never renews: after its lease duration a takes over again, in a new term.
    await eventually(
      "a leads again",
      () => Promise.resolve(a.terms.length === 2 || undefined),
      15_000,
    );
    assert.ok(a.elector.isLeader);
    assert.equal(a.signals[1]!.aborted, false);
    const lease = await readLease(env.cluster, env.ns, name);
    assert.equal(lease.spec?.holderIdentity, "victim");
    assert.equal(lease.spec?.leaseTransitions, 1);
  } finally {
    await env.cleanup(a);
  }
});

Deno.test("a leader that cannot renew past the renew deadline stops leading", async () => {
  const env = await setup();
  const name = uniqueName("lease");
  let broken = false;
  // The API becomes unreachable for this replica only.
  const flaky = new Proxy(env.coordination, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (broken) return Promise.reject(new Error("connect ECONNREFUSED"));
        return v.apply(target, args);
      };
    },
  });
  const a = start(flaky, env.ns, name, "cut-off");
  try {
    await eventually("a leads", () => Promise.resolve(a.elector.isLeader || undefined));
    broken = true;
    const cutAt = performance.now();
    await eventually(
      "the leading signal aborts",
      () => Promise.resolve(a.signals[0]!.aborted || undefined),
      10_000,
    );
    const tookMs = performance.now() - cutAt;
    assert.ok(tookMs >= TIMINGS.renewDeadlineMs - 600, `stopped after ${tookMs.toFixed(0)} ms`);
    assert.ok(tookMs < TIMINGS.leaseDurationMs, `stopped after ${tookMs.toFixed(0)} ms`);
    assert.match(String(a.signals[0]!.reason), /no renewal succeeded for 2000ms/);
    assert.match(String(a.signals[0]!.reason), /ECONNREFUSED/);
    assert.equal(a.elector.isLeader, false);
    // Back online, it takes the Lease again at once: the record there is still its own.
    broken = false;
    await eventually(
      "a leads again",
      () => Promise.resolve(a.terms.length === 2 || undefined),
      15_000,
    );
  } finally {
    await env.cleanup(a);
  }
});

Deno.test("when the leading work fails, run rejects and the Lease is released", async () => {
  const env = await setup();
  const name = uniqueName("lease");
  const a = start(
    env.coordination,
    env.ns,
    name,
    "fails",
    {},
    () => new Promise((_, reject) => setTimeout(() => reject(new Error("boom")), 800)),
  );
  try {
    await assert.rejects(a.running, /boom/);
    assert.equal(a.elector.isLeader, false);
    const lease = await readLease(env.cluster, env.ns, name);
    assert.equal(lease.spec?.holderIdentity ?? "", "");
    assert.equal(lease.spec?.leaseDurationSeconds, 1);
  } finally {
    await env.cleanup(a);
  }
});

Deno.test("LeaseElector refuses inconsistent timings; StaticLeader leads at once", async () => {
  const base = {
    coordination: {} as CoordinationV1Api,
    namespace: "n",
    name: "l",
    identity: "i",
  };
  for (const t of [[3000, 3000, 500], [3000, 2000, 2000], [500, 400, 100], [3000, 2000, 0]]) {
    assert.throws(
      () =>
        new LeaseElector({
          ...base,
          leaseDurationMs: t[0]!,
          renewDeadlineMs: t[1]!,
          retryPeriodMs: t[2]!,
        }),
      InvalidInputError,
    );
  }
  assert.throws(() => new LeaseElector({ ...base, ...TIMINGS, identity: "" }), InvalidInputError);

  const changes: boolean[] = [];
  const s = new StaticLeader("solo", (v) => changes.push(v));
  let seen: AbortSignal | undefined;
  s.onLeading((signal) => {
    seen = signal;
    return new Promise((r) => signal.addEventListener("abort", () => r()));
  });
  const ac = new AbortController();
  const running = s.run(ac.signal);
  await s.ready;
  assert.ok(s.isLeader);
  assert.equal(s.leader, "solo");
  ac.abort();
  await running;
  assert.ok(seen?.aborted);
  assert.equal(s.isLeader, false);
  assert.deepEqual(changes, [true, false]);
});
