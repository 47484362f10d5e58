/** deviceTimers: the EdgeDevice's spec.connectivity.timers in ms; leaseSecondsFor. */
import assert from "node:assert/strict";
import { deviceTimers, leaseSecondsFor } from "./device_timers.ts";
import type { EdgeDevice } from "./types.ts";

const ed = (timers: Record<string, string>): EdgeDevice => ({
  apiVersion: "aranya.arhat.dev/v1alpha1",
  kind: "EdgeDevice",
  spec: { connectivity: { timers } },
});

Deno.test("every timer field becomes an override in ms (the lease in seconds)", () => {
  assert.deepEqual(
    deviceTimers(ed({
      unarySessionTimeout: "10s",
      heartbeatInterval: "1m30s",
      leaseDuration: "4m",
      forceNodeStatusSyncInterval: "1.5h",
      keepaliveInterval: "50s",
    })),
    {
      keepaliveMs: 50_000,
      unaryTimeoutMs: 10_000,
      heartbeatMs: 90_000,
      leaseSeconds: 240,
      statusSyncMs: 5_400_000,
    },
  );
});

Deno.test("no EdgeDevice, no timers, or values that do not parse: the defaults apply", () => {
  assert.deepEqual(deviceTimers(undefined), {});
  assert.deepEqual(deviceTimers({ apiVersion: "x", kind: "EdgeDevice", spec: {} }), {});
  assert.deepEqual(deviceTimers(ed({ heartbeatInterval: "soon", leaseDuration: "0" })), {});
});

Deno.test("the Lease lasts at least two heartbeats", () => {
  assert.equal(leaseSecondsFor(10_000, 40), 40);
  assert.equal(leaseSecondsFor(30_000, 40), 60);
  assert.equal(leaseSecondsFor(1_500, 1), 3);
});
