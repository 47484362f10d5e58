/** NodeStatusReporter: what is pushed, when, and when not (injected clock, no timers). */
import assert from "node:assert/strict";
import { create, fromBinary } from "@bufbuild/protobuf";
import {
  NodeCondition_Status,
  type NodeStatusMsg,
  NodeStatusMsgSchema,
} from "@aranya/proto/gen/aranya/node_pb";
import { UnavailableError } from "@aranya/common/errors";
import { nodeStatusKey } from "@aranya/common/node_status_key";
import { NodeStatusReporter } from "./node_status_reporter.ts";

const MIN = 60_000;

function status(o: { memPressure?: boolean; message?: string; memory?: bigint } = {}) {
  return create(NodeStatusMsgSchema, {
    capacity: { cpuMillis: 4000n, memoryBytes: o.memory ?? 8n << 30n, pods: 110n },
    allocatable: { cpuMillis: 4000n, memoryBytes: 7n << 30n, pods: 110n },
    conditions: [
      {
        type: "Ready",
        status: NodeCondition_Status.HEALTHY,
        reason: "ArhatReady",
        message: "arhat is posting ready status",
      },
      {
        type: "MemoryPressure",
        status: o.memPressure ? NodeCondition_Status.UNHEALTHY : NodeCondition_Status.HEALTHY,
        reason: o.memPressure ? "ArhatHasInsufficientMemory" : "ArhatHasSufficientMemory",
        message: o.message ?? "3.1 GiB of 8 GiB available",
      },
    ],
  });
}

function rig(opts: { online?: boolean; failSend?: boolean } = {}) {
  let clock = 1_000_000;
  let current: NodeStatusMsg = status();
  const sent: NodeStatusMsg[] = [];
  const state = { online: opts.online ?? true, failSend: opts.failSend ?? false };
  const reporter = new NodeStatusReporter({
    collect: () => Promise.resolve(current),
    publish: (payload) => {
      if (!state.online) return undefined;
      if (state.failSend) return Promise.reject(new UnavailableError("link closed"));
      sent.push(fromBinary(NodeStatusMsgSchema, payload));
      return Promise.resolve();
    },
    checkIntervalMs: 30_000,
    maxIntervalMs: 30 * MIN,
    now: () => clock,
  });
  return {
    reporter,
    sent,
    state,
    set: (m: NodeStatusMsg) => current = m,
    advance: (ms: number) => clock += ms,
  };
}

Deno.test("the reply to aranya's full sync is the baseline: an unchanged node sends nothing", async () => {
  const r = rig();
  r.reporter.observe(status());
  for (let i = 0; i < 59; i++) {
    r.advance(30_000);
    assert.equal(await r.reporter.check(), false);
  }
  assert.equal(r.sent.length, 0, "29.5 minutes idle: nothing sent");
});

Deno.test("a changed condition is pushed at the next check, once", async () => {
  const r = rig();
  r.reporter.observe(status());
  r.set(status({ memPressure: true }));
  r.advance(30_000);
  assert.equal(await r.reporter.check(), true);
  assert.equal(r.sent.length, 1);
  assert.equal(r.sent[0]!.conditions[1]!.reason, "ArhatHasInsufficientMemory");
  r.advance(30_000);
  assert.equal(await r.reporter.check(), false, "the same status is not sent twice");
  r.set(status());
  r.advance(30_000);
  assert.equal(await r.reporter.check(), true, "and back");
  assert.equal(r.sent.length, 2);
});

Deno.test("changing amounts in messages are not a change; resources are", async () => {
  const r = rig();
  r.reporter.observe(status());
  r.set(status({ message: "2.9 GiB of 8 GiB available" }));
  r.advance(30_000);
  assert.equal(await r.reporter.check(), false);
  r.set(status({ memory: 16n << 30n }));
  r.advance(30_000);
  assert.equal(await r.reporter.check(), true, "capacity changed");
  assert.notEqual(nodeStatusKey(status()), nodeStatusKey(status({ memory: 16n << 30n })));
  assert.equal(nodeStatusKey(status()), nodeStatusKey(status({ message: "other" })));
});

Deno.test("the ceiling: an unchanged status is sent again after maxIntervalMs", async () => {
  const r = rig();
  r.reporter.observe(status());
  r.advance(30 * MIN - 1);
  assert.equal(await r.reporter.check(), false);
  r.advance(1);
  assert.equal(await r.reporter.check(), true);
  r.advance(30_000);
  assert.equal(await r.reporter.check(), false, "the ceiling restarts from the last send");
  assert.equal(r.sent.length, 1);
});

Deno.test("offline nothing is sent or queued; a failed send is retried at the next check", async () => {
  const r = rig({ online: false });
  r.set(status({ memPressure: true }));
  assert.equal(await r.reporter.check(), false);
  r.state.online = true;
  r.state.failSend = true;
  r.advance(30_000);
  assert.equal(await r.reporter.check(), false);
  r.state.failSend = false;
  r.advance(30_000);
  assert.equal(await r.reporter.check(), true);
  assert.equal(r.sent.length, 1);
  assert.equal(r.reporter.pushed, 1);
});

Deno.test("the floor: run() measures once per checkIntervalMs and stops on abort", async () => {
  let measured = 0;
  const reporter = new NodeStatusReporter({
    collect: () => {
      measured++;
      return Promise.resolve(status());
    },
    publish: () => Promise.resolve(),
    checkIntervalMs: 40,
  });
  const ac = new AbortController();
  const run = reporter.run(ac.signal);
  await new Promise((r) => setTimeout(r, 230));
  ac.abort();
  await run;
  assert.ok(measured >= 4 && measured <= 6, `measured ${measured} times in 230 ms at 40 ms`);
  assert.equal(reporter.pushed, 1, "the first status once, then nothing changed");
});
