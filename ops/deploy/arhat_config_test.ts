import assert from "node:assert/strict";
import { parseConfig } from "@aranya/arhat/config";
import { arhatConfigYaml, DEVICE_PATHS, edgeDeviceObject } from "./arhat_config.ts";
import { parseInventory } from "./inventory.ts";

const inv = parseInventory(
  `
links:
  websocket: { url: "wss://aranya.example.com/v1/link", caFile: /etc/ca.crt }
  grpc: { target: "aranya-grpc.example.com:443" }
  mqtt: { broker: "mqtts://broker.example.com:8883", caFile: /etc/broker.crt }
defaults: { runtime: { endpoint: /run/podman/podman.sock, infraImage: "local/pause:1" } }
devices:
  - { name: ws-1, address: 192.0.2.1, host: { allowExec: true, allowLogs: true } }
  - { name: grpc-1, address: 192.0.2.2, connectivity: grpc, labels: { site: lab } }
  - { name: mqtt-1, address: 192.0.2.3, connectivity: mqtt }
`,
  { env: {}, file: "/fleet/inventory.yaml" },
);
const [ws, grpc, mqtt] = inv.devices;

Deno.test("arhat config: what arhat's own parser accepts, for every method", () => {
  const w = parseConfig(arhatConfigYaml({ device: ws!, links: inv.links, withCa: true }), {});
  assert.deepEqual(w.device, { namespace: "edge", name: "ws-1" });
  assert.equal(w.stateDir, DEVICE_PATHS.stateDir);
  assert.equal(w.runtime.infraImage, "local/pause:1");
  assert.equal(w.host.allowExec, true);
  assert.equal(w.host.allowAttach, false);
  const wm = w.connectivity.methods[0]!;
  assert.equal(wm.method, "websocket");
  assert.equal(wm.method === "websocket" && wm.url, "wss://aranya.example.com/v1/link");
  assert.equal(wm.tokenFile, DEVICE_PATHS.token);
  assert.equal(wm.tls?.caFile, DEVICE_PATHS.ca);

  const g = parseConfig(arhatConfigYaml({ device: grpc!, links: inv.links, withCa: false }), {});
  const gm = g.connectivity.methods[0]!;
  assert.equal(gm.method === "grpc" && gm.target, "aranya-grpc.example.com:443");
  assert.equal(gm.tls, undefined);
  assert.equal(g.host.allowExec, false);

  const m = parseConfig(arhatConfigYaml({ device: mqtt!, links: inv.links, withCa: true }), {});
  const mm = m.connectivity.methods[0]!;
  assert.equal(mm.method === "mqtt" && mm.broker, "mqtts://broker.example.com:8883");
  assert.equal(mm.method === "mqtt" && mm.mqtt.messageNamespace, "/aranya.arhat.dev/edge/mqtt-1");
});

Deno.test("arhat config: the same inputs render the same bytes (re-runs copy nothing)", () => {
  const a = arhatConfigYaml({ device: ws!, links: inv.links, withCa: true });
  const b = arhatConfigYaml({ device: structuredClone(ws!), links: inv.links, withCa: true });
  assert.equal(a, b);
});

Deno.test("EdgeDevice objects carry the method, its settings and the node labels", () => {
  assert.deepEqual(edgeDeviceObject(ws!).spec, {
    connectivity: { method: "websocket" },
  });
  assert.deepEqual(edgeDeviceObject(grpc!).spec, {
    connectivity: { method: "grpc", grpcConfig: {} },
    node: { labels: { site: "lab" } },
  });
  assert.deepEqual(edgeDeviceObject(mqtt!), {
    apiVersion: "aranya.arhat.dev/v1alpha1",
    kind: "EdgeDevice",
    metadata: { name: "mqtt-1", namespace: "edge" },
    spec: {
      connectivity: {
        method: "mqtt",
        mqttConfig: {
          messageNamespace: "/aranya.arhat.dev/edge/mqtt-1",
        },
      },
    },
  });
});
