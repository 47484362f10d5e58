import assert from "node:assert/strict";
import { flatSummary } from "./summary.ts";

Deno.test("flatSummary joins nested keys in camel case and keeps only scalars", () => {
  assert.deepEqual(
    flatSummary({
      podman: { idleRssMB: 68, pods: 50, latencies: [1, 2] },
      exec: { websocket: { p50Ms: 1.5, ok: true }, direct: null },
      "1000": { createPerSec: 51 },
    }),
    {
      podmanIdleRssMB: 68,
      podmanPods: 50,
      execWebsocketP50Ms: 1.5,
      execWebsocketOk: true,
      "1000CreatePerSec": 51,
    },
  );
});

Deno.test("flatSummary joins with underscores when asked", () => {
  assert.deepEqual(
    flatSummary(
      { idle_bytes_per_day: { websocket: 10, mqtt: { device_leg: 4 } }, window_s: 60, no: null },
      { join: "snake" },
    ),
    { idle_bytes_per_day_websocket: 10, idle_bytes_per_day_mqtt_device_leg: 4, window_s: 60 },
  );
});
