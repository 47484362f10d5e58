/**
 * A device on a real mosquitto with dynamic security, kept connected by
 * arhat's reconnect loop: it stays connected while aranya reconciles its
 * broker account again and again (and after an aranya restart, which compares
 * with what the broker holds); when the broker disconnects it without its will
 * (its client disabled and enabled again over the plugin's control topic: an
 * "administrative action"), its reconnect is accepted and works; a rotated
 * token changes its broker account once, and aranya releases the link the
 * broker dropped for it at once.
 */
import assert from "node:assert/strict";
import mqtt, { type MqttClient } from "mqtt";
import { MqttLinkDialer } from "@aranya/arhat/connectivity/mqtt/mqtt_link_dialer";
import { Connector } from "@aranya/arhat/connectivity/connector";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import type { Link, LinkCloseInfo, LinkDialer } from "@aranya/common/link";
import { brokerPassword, linkKey } from "@aranya/common/mqtt_seal";
import { SessionClient } from "@aranya/common/session/session_client";
import { SessionServer } from "@aranya/common/session/session_server";
import { startMosquitto } from "@aranya/e2e/services/mosquitto";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import {
  DYNSEC_RESPONSE_TOPIC,
  DynsecClient,
  ensureDeviceAccount,
  passwordFingerprint,
} from "./dynamic_security.ts";
import { MqttLinkServer } from "./mqtt_link_server.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, f: () => T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(50);
  }
}

const DEVICE = "edge/d1";
const NS = "t/edge/d1";
const ADMIN = { user: "aranya", password: "aranya-admin-pw" };

/** A dynamic-security client of its own (an operator, or a second aranya). */
async function adminDynsec(url: string): Promise<{ dynsec: DynsecClient; client: MqttClient }> {
  const client = await mqtt.connectAsync(url, {
    clientId: `admin-${crypto.randomUUID().slice(0, 8)}`,
    protocolVersion: 5,
    username: ADMIN.user,
    password: ADMIN.password,
    reconnectPeriod: 0,
  });
  client.on("error", () => {});
  const dynsec = new DynsecClient(() => client);
  client.on("message", (topic, payload) => {
    if (topic === DYNSEC_RESPONSE_TOPIC) dynsec.onResponse(payload);
  });
  await client.subscribeAsync(DYNSEC_RESPONSE_TOPIC, { qos: 1 });
  return { dynsec, client };
}

Deno.test({
  name:
    "dynamic security: a device stays connected across account reconciles and reconnects after a kick",
  // mqtt.js keeps timers past single awaits; everything is stopped in the finally block.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const broker = await startMosquitto({
      dynamicSecurity: { adminUser: ADMIN.user, adminPassword: ADMIN.password },
    });
    const url = `mqtt://${broker.address}`;
    const brokerLog = () => Deno.readTextFile(broker.logFile);
    let token = "token-of-d1-0123456789";
    const auth = new StaticAuthenticator();
    auth.setToken(DEVICE, token);
    const registry = new MemoryLinkRegistry();
    const accepted: { link: Link; client: SessionClient; closed?: LinkCloseInfo }[] = [];
    const onLink = (link: Link) => {
      const client = new SessionClient(link, { unaryTimeoutMs: 10_000 });
      client.start();
      const entry: (typeof accepted)[number] = { link, client };
      link.closed.then((info) => entry.closed = info);
      accepted.push(entry);
    };
    const newServer = () =>
      new MqttLinkServer({
        url,
        username: ADMIN.user,
        password: ADMIN.password,
        keys: auth,
        registry,
        dynamicSecurity: true,
        reconnectPeriodMs: 200,
        sessionExpirySeconds: 10,
        probeTimeoutMs: 2_000,
      });
    let server = newServer();
    let stopServer = new AbortController();
    let running = server.run(stopServer.signal, onLink);
    running.catch(() => {});

    // The device: arhat's reconnect loop with the MQTT dialer (its default client id) and a
    // session server that echoes CMD_NODE_INFO_GET. The dialer reads the token on every dial.
    const dialer: LinkDialer = {
      transport: "mqtt",
      dial: (signal) =>
        new MqttLinkDialer({
          url,
          device: DEVICE,
          messageNamespace: NS,
          token,
          dialTimeoutMs: 10_000,
        })
          .dial(signal),
    };
    const deviceLinks: Link[] = [];
    const connector = new Connector({
      methods: [{ dialer, backoff: { initialMs: 200, maxMs: 1_000 } }],
      onLink: (link) => {
        deviceLinks.push(link);
        new SessionServer(link, {
          dispatcher: {
            handler: (kind) =>
              kind === CmdKind.CMD_NODE_INFO_GET
                ? {
                  unary: (cmd) => Promise.resolve({ kind: MsgKind.MSG_DONE, payload: cmd.payload }),
                }
                : undefined,
          },
        }).start();
      },
    });
    const stopDevice = new AbortController();
    const device = connector.run(stopDevice.signal);
    const admins: MqttClient[] = [];
    const works = async (n: number, what: string) => {
      const { client } = await waitFor(`accepted link #${n + 1}`, () => accepted[n], 30_000);
      const reply = await client.request(CmdKind.CMD_NODE_INFO_GET, enc(what));
      assert.equal(dec(reply.payload), what);
    };
    try {
      await server.ready;
      await server.addDevice(DEVICE, NS);
      await works(0, "first");
      assert.equal(connector.connects, 1);

      await (async function accountReconcilesDoNotDisconnect() {
        // aranya calls addDevice on every reconcile of the EdgeDevice.
        for (let i = 0; i < 5; i++) {
          await server.addDevice(DEVICE, NS);
          await sleep(200);
        }
        // Another aranya (a restart, a new leader) compares with what the broker holds.
        const admin = await adminDynsec(url);
        admins.push(admin.client);
        const password = brokerPassword(linkKey(token));
        for (let i = 0; i < 3; i++) {
          assert.equal(await ensureDeviceAccount(admin.dynsec, DEVICE, NS, password), "unchanged");
        }
        const [got] = await admin.dynsec.run([{ command: "getClient", username: DEVICE }]);
        const client = (got!.data as { client: { textdescription: string } }).client;
        assert.match(client.textdescription, new RegExp(passwordFingerprint(password)));
        // A fresh aranya on the same broker and accounts.
        stopServer.abort();
        await running.catch(() => {});
        await deviceLinks[0]!.closed;
        server = newServer();
        stopServer = new AbortController();
        running = server.run(stopServer.signal, onLink);
        running.catch(() => {});
        await server.ready;
        await server.addDevice(DEVICE, NS);
        await works(1, "after aranya's restart");
        await server.addDevice(DEVICE, NS);
        await sleep(1_000);
        assert.ok(accepted[0]!.closed, "the first aranya closed its link");
        assert.equal(accepted[1]!.closed, undefined, "still connected");
        assert.equal(accepted.length, 2, "no reconnect after the reconcile");
        assert.equal(connector.connects, 2);
        assert.doesNotMatch(await brokerLog(), /administrative action/);
      })();

      await (async function aKickWithoutWillIsNoLockout() {
        const admin = await adminDynsec(url);
        admins.push(admin.client);
        const kicked = accepted[1]!.link;
        const results = await admin.dynsec.run([
          { command: "disableClient", username: DEVICE },
          { command: "enableClient", username: DEVICE },
        ]);
        assert.deepEqual(results.map((r) => r.error), [undefined, undefined]);
        // The device dials again; aranya had heard no will, probes the old connection, gets no
        // answer, releases it and accepts the new one.
        await works(2, "after the kick");
        assert.match(await brokerLog(), /disconnected by administrative action/);
        const info = await kicked.closed;
        assert.equal(info.by, "error");
        assert.match(info.reason, /no longer answers/);
        assert.equal(registry.get(DEVICE), accepted[2]!.link);
        assert.equal(connector.connects, 3);
      })();

      await (async function aRotatedTokenChangesTheAccountOnce() {
        const before = accepted[2]!;
        token = "rotated-token-of-d1-0123456789";
        auth.setToken(DEVICE, token);
        await server.addDevice(DEVICE, NS);
        const info = await waitFor("aranya to release the link", () => before.closed);
        assert.equal(info.by, "error");
        assert.match(info.reason, /broker account changed/);
        await works(3, "with the rotated token");
        await server.addDevice(DEVICE, NS);
        await sleep(1_000);
        assert.equal(accepted.length, 4, "the new password is set once");
        assert.equal(registry.get(DEVICE), accepted[3]!.link);
      })();
    } finally {
      stopDevice.abort();
      await device.catch(() => {});
      for (const c of admins) await c.endAsync(true).catch(() => {});
      stopServer.abort();
      await running.catch(() => {});
      await broker.stop();
    }
  },
});
