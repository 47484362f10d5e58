import assert from "node:assert/strict";
import { ConfigError } from "@aranya/common/config_reader";
import { PROJECT_ROOT } from "../build/bundle.ts";
import { parseInventory, readInventory } from "./inventory.ts";

const opts = { env: { HOME: "/home/op", TOKEN_DIR: "/srv" }, file: "/fleet/inventory.yaml" };

const GOOD = `
cluster: { kubeconfig: ~/.kube/edge }
links:
  websocket: { url: wss://aranya.example.com/v1/link, caFile: ca.crt }
  mqtt: { broker: mqtts://broker.example.com:8883 }
defaults:
  namespace: edge
  user: pi
  key: ~/.ssh/fleet
  runtime: { endpoint: /run/podman/podman.sock }
  labels: { example.com/site: lab }
devices:
  - name: pi-1
    address: 192.0.2.10
    arch: aarch64
  - name: gw-1
    address: "[2001:db8::1]:2222"
    user: root
    connectivity: mqtt
    host: { allowExec: true }
    labels: { role: gateway }
`;

Deno.test("inventory: defaults apply to each device and relative paths follow the file", () => {
  const inv = parseInventory(GOOD, opts);
  assert.equal(inv.kubeconfig, "/home/op/.kube/edge");
  assert.deepEqual(inv.artifacts, { dir: "/fleet/dist", launcher: false });
  assert.deepEqual(inv.links.websocket, {
    url: "wss://aranya.example.com/v1/link",
    caFile: "/fleet/ca.crt",
  });
  assert.deepEqual(inv.aranya.install, true);
  assert.deepEqual(inv.parallel, 4);
  const [pi, gw] = inv.devices;
  assert.deepEqual(pi!.key, "edge/pi-1");
  assert.deepEqual([pi!.host, pi!.port, pi!.user, pi!.keyFile], [
    "192.0.2.10",
    22,
    "pi",
    "/home/op/.ssh/fleet",
  ]);
  assert.deepEqual(pi!.knownHostsFile, "/home/op/.ssh/known_hosts");
  assert.deepEqual([pi!.arch, pi!.connectivity, pi!.init], ["aarch64", "websocket", "auto"]);
  assert.deepEqual(pi!.runtimeEndpoint, "unix:///run/podman/podman.sock");
  assert.deepEqual(pi!.hostManagement.allowExec, false);
  assert.deepEqual(pi!.labels, { "example.com/site": "lab" });
  assert.deepEqual([gw!.host, gw!.port, gw!.user, gw!.connectivity], [
    "2001:db8::1",
    2222,
    "root",
    "mqtt",
  ]);
  assert.deepEqual(gw!.hostManagement, {
    allowExec: true,
    allowAttach: false,
    allowLogs: false,
    allowPortForward: false,
  });
  assert.deepEqual(gw!.labels, { "example.com/site": "lab", role: "gateway" });
});

/** The message of the ConfigError `fn` throws. */
function problems(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `not a ConfigError: ${err}`);
    return err.message;
  }
  assert.fail("no error thrown");
}

Deno.test("inventory: every problem is reported at once with its field path", () => {
  const m = problems(
    () =>
      parseInventory(
        `
links:
  websocket: { url: "http://nope" }
defaults:
  name: shared
  arch: riscv64
devices:
  - name: Bad_Name
    address: "a b"
  - name: ok
    address: 192.0.2.1
    connectivity: grpc
    labels: { "bad key!": x }
  - name: ok
    address: 192.0.2.2
    colour: blue
`,
        opts,
      ),
  );
  assert.match(m, /inventory "\/fleet\/inventory.yaml"/);
  assert.match(
    m,
    /links\.websocket\.url: must be a "wss:\/\/host\[:port\]\/path" URL; got "http:\/\/nope"/,
  );
  assert.match(m, /defaults\.name: belongs to each device, not to defaults/);
  assert.match(m, /defaults\.arch: must be one of "x86_64", "aarch64"; got "riscv64"/);
  assert.match(m, /devices\[0\]\.name: must be a DNS label/);
  assert.match(m, /devices\[0\]\.address: must be "host", "host:port"/);
  assert.match(m, /devices\[1\]\.connectivity: is "grpc" but links\.grpc is not set/);
  assert.match(m, /devices\[1\]\.labels\.bad key!: must be a label key/);
  assert.match(m, /devices\[2\]\.name: device "edge\/ok" is listed twice/);
  assert.match(m, /devices\[2\]\.colour: unknown field/);
});

Deno.test("inventory: devices are required and ${VAR} expands", () => {
  assert.match(problems(() => parseInventory("links: {}\n", opts)), /devices: is required/);
  const inv = parseInventory(
    `links: { grpc: { target: "aranya:8444" } }
devices: [{ name: d1, address: 192.0.2.3, connectivity: grpc, key: "\${TOKEN_DIR}/id" }]
`,
    opts,
  );
  assert.deepEqual(inv.devices[0]!.keyFile, "/srv/id");
});

Deno.test("inventory: the sample in deploy/samples is valid", async () => {
  const inv = await readInventory(`${PROJECT_ROOT}/deploy/samples/inventory.yaml`, {
    env: { HOME: "/home/op" },
  });
  assert.equal(inv.aranya.tls?.certFile, `${PROJECT_ROOT}/deploy/samples/pki/aranya.crt`);
  assert.equal(inv.artifacts.dir, `${PROJECT_ROOT}/dist`);
  assert.deepEqual(inv.devices.map((d) => [d.key, d.host, d.port, d.user, d.arch]), [
    ["edge/pi-kitchen", "192.0.2.21", 22, "pi", "aarch64"],
    ["edge/pi-garage", "192.0.2.22", 2222, "pi", "aarch64"],
    ["edge/gateway-1", "gateway-1.lan", 22, "root", "x86_64"],
  ]);
  assert.equal(inv.devices[2]!.hostManagement.allowExec, true);
  assert.deepEqual(inv.devices[1]!.labels, {
    "example.com/fleet": "homelab",
    "example.com/site": "garage",
  });
});
