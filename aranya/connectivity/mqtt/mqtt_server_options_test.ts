/**
 * aranya's MQTT keepalive goes from the config (`links.mqtt.keepalive`)
 * through the server options into the CONNECT packet its client sends: a
 * stand-in broker (a TCP listener) reads the packet. No broker needed.
 */
import assert from "node:assert/strict";
import { parseAranyaConfig } from "../../config.ts";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import { MQTT_SERVER_DEFAULT_KEEPALIVE_SECONDS, MqttLinkServer } from "./mqtt_link_server.ts";
import { mqttLinkServerOptions } from "./mqtt_server_options.ts";

/** The keepalive of the first CONNECT packet a client sends to `listener`. */
async function connectKeepalive(listener: Deno.Listener): Promise<number> {
  const conn = await listener.accept();
  try {
    const buf = new Uint8Array(1024);
    let got = 0;
    // Fixed header (0x10, remaining length), protocol name "MQTT", level, flags, keepalive (u16).
    for (;;) {
      const n = await conn.read(buf.subarray(got));
      if (n === null) throw new Error("The client closed before its CONNECT");
      got += n;
      let i = 1;
      while (i < got && buf[i]! & 0x80) i++;
      const header = i + 1;
      if (got >= header + 10) {
        assert.equal(buf[0], 0x10, "a CONNECT packet");
        const name = new TextDecoder().decode(buf.subarray(header + 2, header + 6));
        assert.equal(name, "MQTT");
        assert.equal(buf[header + 6], 5, "MQTT 5");
        return (buf[header + 8]! << 8) | buf[header + 9]!;
      }
    }
  } finally {
    conn.close();
  }
}

async function keepaliveOnTheWire(yaml: (port: number) => string): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const config = parseAranyaConfig(yaml(port), { env: {} });
  assert.ok(config.links.mqtt);
  const options = await mqttLinkServerOptions(config.links.mqtt, {
    keys: new StaticAuthenticator(),
    registry: new MemoryLinkRegistry(),
    readTextFile: () => Promise.reject(new Error("No file is named")),
  });
  const server = new MqttLinkServer({ ...options, reconnectPeriodMs: 60_000 });
  const ac = new AbortController();
  const running = server.run(ac.signal, () => {});
  running.catch(() => {});
  try {
    return await connectKeepalive(listener);
  } finally {
    ac.abort();
    await running.catch(() => {});
    listener.close();
  }
}

Deno.test("links.mqtt.keepalive reaches the CONNECT packet of aranya's MQTT client", async () => {
  const seconds = await keepaliveOnTheWire((port) =>
    `links: {mqtt: {broker: "mqtt://127.0.0.1:${port}", keepalive: 2m30s}}\n`
  );
  assert.equal(seconds, 150);
});

Deno.test("without links.mqtt.keepalive aranya's MQTT client keeps alive every 5 minutes", async () => {
  assert.equal(MQTT_SERVER_DEFAULT_KEEPALIVE_SECONDS, 300);
  const seconds = await keepaliveOnTheWire((port) =>
    `links: {mqtt: {broker: "mqtt://127.0.0.1:${port}"}}\n`
  );
  assert.equal(seconds, 300);
});

Deno.test("mqttLinkServerOptions reads the password and TLS files the config names", async () => {
  const files: Record<string, string> = {
    "/s/pw": "secret\n",
    "/s/ca": "CA",
    "/s/crt": "CRT",
    "/s/key": "KEY",
  };
  const config = parseAranyaConfig(
    `links:
  mqtt:
    broker: mqtts://broker.lan:8883
    username: aranya
    passwordFile: /s/pw
    dynamicSecurity: true
    keepalive: 45s
    tls: {caFile: /s/ca, certFile: /s/crt, keyFile: /s/key, serverName: mqtt.lan}
`,
    { env: {} },
  );
  const options = await mqttLinkServerOptions(config.links.mqtt!, {
    keys: new StaticAuthenticator(),
    registry: new MemoryLinkRegistry(),
    readTextFile: (path) => Promise.resolve(files[path]!),
  });
  assert.equal(options.url, "mqtts://broker.lan:8883");
  assert.equal(options.username, "aranya");
  assert.equal(options.password, "secret");
  assert.deepEqual([options.ca, options.cert, options.key], ["CA", "CRT", "KEY"]);
  assert.equal(options.servername, "mqtt.lan");
  assert.equal(options.dynamicSecurity, true);
  assert.equal(options.keepaliveSeconds, 45);
});
