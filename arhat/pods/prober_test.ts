/**
 * Prober timing and thresholds with a scripted runtime (pure logic: the real
 * engines run the probes in pod_behaviour_test.ts).
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { ContainerSpecSchema } from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerRuntime, OutputChunk, StreamHandle } from "../runtime/runtime.ts";
import { type ProbeFailure, Prober, probeTiming } from "./prober.ts";

/** A runtime whose exec exits with the next code of `codes` (the last repeats). */
function scripted(codes: number[]): ContainerRuntime & { calls: number } {
  const rt = {
    calls: 0,
    exec(): Promise<StreamHandle> {
      const code = codes[Math.min(rt.calls, codes.length - 1)]!;
      rt.calls++;
      return Promise.resolve({
        output: new ReadableStream<OutputChunk>({ start: (c) => c.close() }),
        exitCode: Promise.resolve(code),
        resize: () => Promise.resolve(),
        close: () => {},
      });
    },
  };
  return rt as unknown as ContainerRuntime & { calls: number };
}

const exec = { case: "exec" as const, value: { command: ["check"] } };

Deno.test("probeTiming fills the kubelet's defaults; liveness and startup need one success", () => {
  const p = create(ContainerSpecSchema, { readinessProbe: { action: exec } }).readinessProbe!;
  assert.deepEqual(probeTiming(p, "readiness"), {
    initialDelayMs: 0,
    periodMs: 10_000,
    timeoutMs: 1000,
    successThreshold: 1,
    failureThreshold: 3,
  });
  const q = create(ContainerSpecSchema, {
    livenessProbe: { action: exec, successThreshold: 3, periodSeconds: 2 },
  }).livenessProbe!;
  assert.equal(probeTiming(q, "liveness").successThreshold, 1);
  assert.equal(probeTiming(q, "liveness").periodMs, 2000);
});

Deno.test("readiness needs successThreshold successes and failureThreshold failures in a row", async () => {
  // fail, ok, ok (ready), fail (still ready: threshold 2), fail (not ready)
  const rt = scripted([1, 0, 0, 1, 1, 1]);
  const changes: boolean[] = [];
  const prober = new Prober({
    runtime: rt,
    onChange: () => changes.push(prober.state("c1")!.ready),
    onFailure: () => assert.fail("readiness never restarts"),
  });
  prober.track({
    podUid: "p",
    containerId: "c1",
    address: "",
    startedAtMs: Date.now(),
    container: create(ContainerSpecSchema, {
      name: "app",
      readinessProbe: { action: exec, periodSeconds: 1, successThreshold: 2, failureThreshold: 2 },
    }),
  });
  assert.deepEqual(prober.state("c1"), { started: true, ready: false });
  await new Promise((r) => setTimeout(r, 5500));
  prober.close();
  assert.deepEqual(changes, [true, false]);
});

Deno.test("startup gates liveness; liveness reports a failure once, with its grace", async () => {
  const rt = scripted([1, 0, 1, 1, 1]);
  const failures: ProbeFailure[] = [];
  const prober = new Prober({
    runtime: rt,
    onChange: () => {},
    onFailure: (f) => failures.push(f),
  });
  prober.track({
    podUid: "p",
    containerId: "c2",
    address: "",
    startedAtMs: Date.now(),
    container: create(ContainerSpecSchema, {
      name: "app",
      startupProbe: { action: exec, periodSeconds: 1, failureThreshold: 10 },
      livenessProbe: {
        action: exec,
        periodSeconds: 1,
        failureThreshold: 2,
        terminationGracePeriodSeconds: 7n,
        hasTerminationGracePeriodSeconds: true,
      },
    }),
  });
  assert.deepEqual(prober.state("c2"), { started: false, ready: false });
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(prober.state("c2"), { started: true, ready: true }, "started after 1 success");
  await new Promise((r) => setTimeout(r, 3500));
  prober.close();
  assert.equal(failures.length, 1);
  assert.deepEqual(
    {
      kind: failures[0]!.kind,
      grace: failures[0]!.graceSeconds,
      container: failures[0]!.container,
    },
    { kind: "liveness", grace: 7, container: "app" },
  );
  assert.ok(rt.calls <= 5, `no probe after the failure was reported (${rt.calls} calls)`);
});

Deno.test("a network probe tracked before the pod had an address asks for it again", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const port = server.addr.port;
  let asked = 0;
  const changes: boolean[] = [];
  const prober = new Prober({
    runtime: scripted([0]),
    onChange: () => changes.push(prober.state("c1")!.ready),
    onFailure: () => assert.fail("readiness never restarts"),
    // The engine reports the pod's network only from the third question on.
    addressOf: () => Promise.resolve(++asked >= 3 ? "127.0.0.1" : undefined),
  });
  try {
    prober.track({
      podUid: "p",
      containerId: "c1",
      address: "",
      startedAtMs: Date.now(),
      container: create(ContainerSpecSchema, {
        name: "web",
        readinessProbe: {
          action: { case: "httpGet", value: { path: "/", port, scheme: "HTTP" } },
          periodSeconds: 1,
        },
      }),
    });
    const deadline = Date.now() + 15_000;
    while (changes.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(changes, [true]);
    assert.equal(asked, 3, "asked until it had one, then no more");
  } finally {
    prober.close();
    await server.shutdown();
  }
});
