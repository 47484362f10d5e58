/**
 * Per-device broker identity on a real mosquitto with its dynamic security
 * plugin, managed by the MqttLinkServer: a device connects with its own
 * derived credentials and its link works; it may neither subscribe to nor
 * publish on another device's topics; anonymous clients and wrong passwords
 * are refused; a removed device's account is gone.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import mqtt, { type MqttClient } from "mqtt";
import { MqttLinkDialer } from "@aranya/arhat/connectivity/mqtt/mqtt_link_dialer";
import { brokerPassword, linkKey } from "@aranya/common/mqtt_seal";
import type { Link } from "@aranya/common/link";
import { startMosquitto } from "@aranya/e2e/services/mosquitto";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import { MqttLinkServer } from "./mqtt_link_server.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("dynamic security: one broker account per device, its own topics only", async () => {
  const broker = await startMosquitto({
    dynamicSecurity: { adminUser: "aranya", adminPassword: "aranya-admin-pw" },
  });
  const url = `mqtt://${broker.address}`;
  const auth = new StaticAuthenticator();
  auth.setToken("ns/d1", "token-of-d1-0123456789");
  auth.setToken("ns/d2", "token-of-d2-0123456789");
  const server = new MqttLinkServer({
    url,
    username: "aranya",
    password: "aranya-admin-pw",
    keys: auth,
    registry: new MemoryLinkRegistry(),
    dynamicSecurity: true,
    reconnectPeriodMs: 200,
    sessionExpirySeconds: 10,
  });
  const links: Link[] = [];
  const ac = new AbortController();
  const running = server.run(ac.signal, (l) => links.push(l));
  running.catch(() => {});
  const clients: MqttClient[] = [];
  const connectAs = async (username?: string, password?: string) => {
    const c = await mqtt.connectAsync(url, {
      clientId: `spy-${crypto.randomUUID().slice(0, 8)}`,
      protocolVersion: 5,
      reconnectPeriod: 0,
      username,
      password,
    });
    c.on("error", () => {});
    clients.push(c);
    return c;
  };
  const d1Password = brokerPassword(linkKey("token-of-d1-0123456789"));
  try {
    await server.ready;
    await server.addDevice("ns/d1", "t/d1");
    await server.addDevice("ns/d2", "t/d2");
    // The accounts appear once aranya set them up.
    await waitFor("d1's broker account", () => connectAs("ns/d1", d1Password));

    // The device's link, with the default (derived) credentials.
    const device = await new MqttLinkDialer({
      url,
      device: "ns/d1",
      messageNamespace: "t/d1",
      token: "token-of-d1-0123456789",
      dialTimeoutMs: 5_000,
    }).dial(AbortSignal.timeout(10_000));
    const got: string[] = [];
    device.start((f) => got.push(dec(f)));
    const link = await waitFor("the accepted link", () => Promise.resolve(links[0]));
    link.start(() => {});
    await link.send(enc("hello d1"));
    await waitFor("the frame", () => Promise.resolve(got.length ? got : undefined));
    assert.deepEqual(got, ["hello d1"]);

    // As d1's broker identity: nothing of d2's topics.
    const d1 = await connectAs("ns/d1", d1Password);
    for (const topic of ["t/d2/cmd", "t/d2/msg", "t/d2/status", "t/#", "#"]) {
      await assert.rejects(
        d1.subscribeAsync(topic, { qos: 1 }),
        /not authorized/i,
        `subscribing "${topic}" is refused`,
      );
    }
    const own = await d1.subscribeAsync("t/d1/cmd", { qos: 1 });
    assert.ok(own[0]!.qos < 0x80, "its own cmd topic is allowed");
    await assert.rejects(
      d1.publishAsync("t/d2/msg", Buffer.from("forged"), { qos: 1 }),
      /not authorized|0x87|135/i,
      "publishing on another device's topic is refused",
    );
    await assert.rejects(
      d1.publishAsync("t/d1/cmd", Buffer.from("forged"), { qos: 1 }),
      /not authorized|0x87|135/i,
      "a device cannot publish commands, not even to itself",
    );

    // Anonymous clients, a wrong password, the token itself as password: refused.
    await assert.rejects(connectAs(), /not authori[sz]ed|bad user|135|134/i);
    await assert.rejects(connectAs("ns/d1", "wrong"), /not authori[sz]ed|bad user|135|134/i);
    await assert.rejects(
      connectAs("ns/d1", "token-of-d1-0123456789"),
      /not authori[sz]ed|bad user|135|134/i,
    );

    // A removed device's account is gone.
    device.close();
    server.removeDevice("ns/d1");
    await waitFor("d1's account removed", async () => {
      try {
        await connectAs("ns/d1", d1Password);
        return undefined;
      } catch {
        return true;
      }
    });
  } finally {
    for (const c of clients) await c.endAsync(true).catch(() => {});
    ac.abort();
    await running.catch(() => {});
    await broker.stop();
  }
});
