import assert from "node:assert/strict";
import { createMetrics } from "./aranya_metrics.ts";
import { OpsHttpServer, type Readiness } from "./ops_http_server.ts";

/** The value of the sample `name` (with labels, as written) in exposition `text`. */
function sample(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

Deno.test("ops server: /healthz, /readyz follows readiness, /metrics shows aranya and process metrics", async () => {
  const metrics = createMetrics();
  let state: Readiness = { ready: false, reason: "not the leader" };
  const server = new OpsHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    metrics,
    readiness: () => state,
  });
  const ac = new AbortController();
  const running = server.run(ac.signal);
  try {
    await server.ready;
    assert.ok(server.port > 0);
    const base = `http://127.0.0.1:${server.port}`;
    const get = async (path: string, init?: RequestInit) => {
      const r = await fetch(base + path, init);
      return { status: r.status, body: await r.text(), type: r.headers.get("content-type") };
    };

    assert.deepEqual(await get("/healthz"), {
      status: 200,
      body: "ok\n",
      type: "text/plain; charset=utf-8",
    });
    assert.deepEqual(await get("/readyz"), {
      status: 503,
      body: "not the leader\n",
      type: "text/plain; charset=utf-8",
    });
    state = { ready: true };
    assert.equal((await get("/readyz")).status, 200);
    let fail = true;
    const failing = new OpsHttpServer({
      hostname: "127.0.0.1",
      port: 0,
      metrics,
      readiness: () => {
        if (fail) throw new Error("API unreachable");
        return { ready: true };
      },
    });
    const running2 = failing.run(ac.signal);
    await failing.ready;
    const r = await fetch(`http://127.0.0.1:${failing.port}/readyz`);
    assert.equal(r.status, 503);
    assert.equal(await r.text(), "readiness check failed: API unreachable\n");
    fail = false;

    metrics.devicesConnected.set(3);
    metrics.edgeDevices.set(5);
    metrics.reconcileTotal.inc({ controller: "edgedevice", result: "success" }, 2);
    metrics.podSyncsTotal.inc({ result: "error" });
    metrics.members.set(1);
    metrics.apiRequestsTotal.inc({ verb: "get" });
    metrics.apiWritesTotal.inc();
    // Burn some CPU so the CPU counter is clearly above zero.
    const until = performance.now() + 50;
    while (performance.now() < until) Math.sqrt(Math.random());
    const m = await get("/metrics");
    assert.equal(m.status, 200);
    assert.equal(m.type, "text/plain; version=0.0.4; charset=utf-8");
    assert.equal(sample(m.body, "aranya_devices_connected"), 3);
    assert.equal(sample(m.body, "aranya_edgedevices"), 5);
    assert.equal(
      sample(m.body, 'aranya_reconcile_total{controller="edgedevice",result="success"}'),
      2,
    );
    assert.equal(sample(m.body, 'aranya_pod_syncs_total{result="error"}'), 1);
    assert.equal(sample(m.body, "aranya_replica_members"), 1);
    assert.equal(sample(m.body, 'aranya_api_requests_total{verb="get"}'), 1);
    assert.equal(sample(m.body, "aranya_api_writes_total"), 1);
    assert.match(m.body, /# TYPE process_cpu_seconds_total counter/);
    const rss = sample(m.body, "process_resident_memory_bytes")!;
    assert.ok(rss > 10 * 1024 * 1024, `RSS ${rss}`);
    const cpu = sample(m.body, "process_cpu_seconds_total")!;
    assert.ok(cpu >= 0.04, `CPU seconds ${cpu}`);
    const user = sample(m.body, "process_cpu_user_seconds_total")!;
    const sys = sample(m.body, "process_cpu_system_seconds_total")!;
    assert.ok(Math.abs(user + sys - cpu) < 1e-6, `${user} + ${sys} != ${cpu}`);
    const startedAt = sample(m.body, "process_start_time_seconds")!;
    assert.ok(Math.abs(startedAt - Date.now() / 1000) < 3600, `start time ${startedAt}`);
    // The CPU counter never goes down between scrapes.
    const again = await get("/metrics");
    assert.ok(sample(again.body, "process_cpu_seconds_total")! >= cpu);

    assert.equal((await get("/nope")).status, 404);
    const post = await fetch(base + "/metrics", { method: "POST" });
    await post.body?.cancel();
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    const head = await fetch(base + "/healthz", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");

    ac.abort();
    await Promise.all([running, running2]);
    await assert.rejects(fetch(base + "/healthz"));
  } finally {
    ac.abort();
    await running;
  }
});

Deno.test("ops server: a busy port rejects run and ready", async () => {
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const server = new OpsHttpServer({
      hostname: "127.0.0.1",
      port: blocker.addr.port,
      metrics: createMetrics({ processMetrics: false }),
      readiness: () => ({ ready: true }),
    });
    const ac = new AbortController();
    await assert.rejects(server.run(ac.signal), Deno.errors.AddrInUse);
    await assert.rejects(server.ready, Deno.errors.AddrInUse);
  } finally {
    blocker.close();
  }
});

Deno.test("metrics registries are independent", async () => {
  const a = createMetrics({ processMetrics: false });
  const b = createMetrics({ processMetrics: false });
  a.members.set(1);
  assert.equal(sample(await a.text(), "aranya_replica_members"), 1);
  assert.equal(sample(await b.text(), "aranya_replica_members"), 0);
  assert.doesNotMatch(await a.text(), /process_/);
});
