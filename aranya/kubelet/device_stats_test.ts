/**
 * getDeviceStats over the session layer (in-memory link) against arhat's own
 * stats handler with a fixed reading, and against devices that answer wrong,
 * not at all, or not support the command. The handler on real engines:
 * arhat/agent/handle_stats_test.ts.
 */
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { Agent } from "@aranya/arhat/agent/agent";
import { statsHandlers } from "@aranya/arhat/agent/handle_stats";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import {
  CanceledError,
  NotSupportedError,
  ProtocolError,
  TimeoutError,
  UnavailableError,
} from "@aranya/common/errors";
import { memoryLinkPair } from "@aranya/common/testing/memory_link";
import { SessionClient } from "@aranya/common/session/session_client";
import { SessionServer } from "@aranya/common/session/session_server";
import { StatsMsgSchema } from "@aranya/proto/gen/aranya/stats_pb";
import { getDeviceStats } from "./device_stats.ts";
import { toSummary } from "./stats_summary.ts";

const READING = create(StatsMsgSchema, {
  node: { cpu: { timeUnixMs: 1_700_000_000_000n, usageCoreNanoseconds: 42n } },
  pods: [{
    podUid: "u",
    namespace: "edge",
    name: "p",
    containers: [{ name: "c", memory: { timeUnixMs: 1n, workingSetBytes: 7n } }],
  }],
});

function setup(agent: Agent) {
  const [cloud, device] = memoryLinkPair("edge/dev");
  const client = new SessionClient(cloud, { unaryTimeoutMs: 2000 });
  new SessionServer(device, { dispatcher: agent }).start();
  client.start();
  return { client, cloud };
}

Deno.test("getDeviceStats() decodes the device's StatsMsg", async () => {
  const { client, cloud } = setup(
    new Agent().register(statsHandlers(() => Promise.resolve(toBinary(StatsMsgSchema, READING)))),
  );
  try {
    const msg = await getDeviceStats(client);
    assert.equal(msg.node?.cpu?.usageCoreNanoseconds, 42n);
    assert.equal(msg.pods[0]?.containers[0]?.memory?.workingSetBytes, 7n);
    assert.equal(toSummary("dev", msg).pods[0]?.podRef.uid, "u");
  } finally {
    cloud.close();
  }
});

Deno.test("getDeviceStats() refuses a wrong kind or a malformed payload as ProtocolError", async () => {
  const answer = (kind: MsgKind, payload: Uint8Array) =>
    new Agent().register([[CmdKind.CMD_STATS_GET, {
      unary: () => Promise.resolve({ kind, payload }),
    }]]);
  const wrong = setup(answer(MsgKind.MSG_NODE_STATUS, new Uint8Array()));
  try {
    await assert.rejects(getDeviceStats(wrong.client), (err: unknown) => {
      assert.ok(err instanceof ProtocolError, String(err));
      assert.equal(
        err.message,
        'Device "edge/dev" answered CMD_STATS_GET with "MSG_NODE_STATUS" instead of "MSG_STATS"',
      );
      return true;
    });
  } finally {
    wrong.cloud.close();
  }
  const malformed = setup(answer(MsgKind.MSG_STATS, new Uint8Array([0x0a, 0xff])));
  try {
    await assert.rejects(
      getDeviceStats(malformed.client),
      (err: unknown) =>
        err instanceof ProtocolError &&
        /^Malformed StatsMsg from device "edge\/dev": /.test(err.message),
    );
  } finally {
    malformed.cloud.close();
  }
});

Deno.test("getDeviceStats(): an older device, a silent one, a cancel, no link", async () => {
  const old = setup(new Agent());
  try {
    await assert.rejects(getDeviceStats(old.client), NotSupportedError);
  } finally {
    old.cloud.close();
  }
  const silent = setup(
    new Agent().register(statsHandlers(() => new Promise<Uint8Array>(() => {}))),
  );
  try {
    await assert.rejects(getDeviceStats(silent.client, { timeoutMs: 50 }), TimeoutError);
    const ac = new AbortController();
    const p = getDeviceStats(silent.client, { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, CanceledError);
  } finally {
    silent.cloud.close();
  }
  await new Promise((r) => setTimeout(r, 10));
  await assert.rejects(getDeviceStats(silent.client), UnavailableError);
});
