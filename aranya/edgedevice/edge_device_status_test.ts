import assert from "node:assert/strict";
import {
  connectedStatus,
  disconnectedStatus,
  pendingStatus,
  rfc3339,
  setCondition,
  syncedStatus,
} from "./edge_device_status.ts";
import type { EdgeDeviceStatus } from "./types.ts";

const t0 = new Date("2030-01-01T00:00:00.123Z");
const t1 = new Date("2030-01-01T00:05:00Z");
const t2 = new Date("2030-01-01T00:10:00Z");
const cond = (s: EdgeDeviceStatus, type: string) => s.conditions?.find((c) => c.type === type);

Deno.test("times are RFC 3339 in whole seconds", () => {
  assert.equal(rfc3339(t0), "2030-01-01T00:00:00Z");
});

Deno.test("a condition's transition time changes only with its status", () => {
  let list = setCondition(undefined, { type: "A", status: "True", reason: "R1" }, t0);
  list = setCondition(list, { type: "A", status: "True", reason: "R2", message: "m" }, t1);
  assert.deepEqual(list, [{
    type: "A",
    status: "True",
    reason: "R2",
    message: "m",
    lastTransitionTime: rfc3339(t0),
  }]);
  list = setCondition(list, { type: "A", status: "False", reason: "R3" }, t2);
  assert.equal(list[0]!.lastTransitionTime, rfc3339(t2));
  list = setCondition(list, { type: "B", status: "Unknown" }, t2);
  assert.deepEqual(list.map((c) => c.type), ["A", "B"]);
});

Deno.test("pending, connected, synced, disconnected", () => {
  const pending = pendingStatus(undefined, "dev", t0);
  assert.equal(pending.phase, "Pending");
  assert.equal(pending.node, "dev");
  assert.equal(cond(pending, "Connected")?.status, "False");
  assert.equal(cond(pending, "NodeReady")?.status, "Unknown");
  assert.equal(pending.lastSeen, undefined);
  // An existing phase is kept (the reconciler never overrides the session).
  assert.equal(pendingStatus({ phase: "Connected" }, "dev", t0).phase, "Connected");

  const agent = { version: "0.1.0", os: "linux", arch: "amd64", runtime: "podman://5.0" };
  const connected = connectedStatus(pending, {
    node: "dev",
    transport: "mqtt",
    nodeReady: { status: "True", reason: "EdgeDeviceReady" },
    agent,
    now: t1,
  });
  assert.equal(connected.phase, "Connected");
  assert.equal(connected.lastSeen, rfc3339(t1));
  assert.deepEqual(connected.agent, agent);
  assert.equal(cond(connected, "Connected")?.status, "True");
  assert.match(cond(connected, "Connected")!.message!, /over mqtt/);
  assert.equal(cond(connected, "NodeReady")?.reason, "EdgeDeviceReady");
  // Without node info the NodeReady condition is Unknown and the agent kept.
  const blind = connectedStatus(connected, { node: "dev", transport: "grpc", now: t2 });
  assert.equal(cond(blind, "NodeReady")?.status, "Unknown");
  assert.deepEqual(blind.agent, agent);

  const synced = syncedStatus(connected, { status: "True", reason: "EdgeDeviceReady" }, t2);
  assert.equal(synced.lastSeen, rfc3339(t2));
  assert.deepEqual(synced.conditions, connected.conditions, "nothing changed but lastSeen");

  const gone = disconnectedStatus(synced, "The link closed (by the device): bye", t2);
  assert.equal(gone.phase, "Disconnected");
  assert.equal(gone.lastSeen, rfc3339(t2));
  assert.deepEqual(
    [cond(gone, "Connected")?.status, cond(gone, "Connected")?.reason],
    ["False", "EdgeDeviceDisconnected"],
  );
  assert.equal(cond(gone, "NodeReady")?.status, "False");
  assert.deepEqual(gone.agent, agent);
});
