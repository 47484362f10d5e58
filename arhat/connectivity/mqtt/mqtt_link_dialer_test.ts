/**
 * MqttLinkDialer against a real mosquitto: failures of a dial (unreachable
 * broker, silent aranya, abort), filtering of the shared cmd topic, the
 * persistent session, and what the broker does with two agents sharing one
 * client id. aranya is the real MqttLinkServer where one is needed.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import { MqttLinkServer } from "@aranya/aranya/connectivity/mqtt/mqtt_link_server";
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { StaticAuthenticator } from "@aranya/aranya/connectivity/testing/static_authenticator";
import { deferred } from "@aranya/common/deferred";
import {
  CmdKind,
  decodeMsg,
  decodeState,
  encodeCmd,
  rejectFrame,
  StateKind,
} from "@aranya/common/envelope";
import {
  AlreadyExistsError,
  CanceledError,
  InvalidInputError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { Link } from "@aranya/common/link";
import { acceptFrame } from "@aranya/common/mqtt_protocol";
import { acceptMac, FrameSealer, linkKey, newNonce, sessionKeys } from "@aranya/common/mqtt_seal";
import { type Broker, startMosquitto } from "@aranya/e2e/services/mosquitto";
import { ensureDir, stateDir } from "@aranya/e2e/paths";
import { freePort, startService, waitReady } from "@aranya/e2e/process";
import {
  defaultMqttClientId,
  MqttLinkDialer,
  type MqttLinkDialerOptions,
} from "./mqtt_link_dialer.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** A broker with aranya's server on it, which accepts `edge/dev1` with token "tok". */
async function withServer(
  fn: (ctx: {
    broker: Broker;
    url: string;
    server: MqttLinkServer;
    nextLink: () => Promise<Link>;
    dialer: (extra?: Partial<MqttLinkDialerOptions>) => MqttLinkDialer;
  }) => Promise<void>,
): Promise<void> {
  const broker = await startMosquitto();
  const url = `mqtt://${broker.address}`;
  const auth = new StaticAuthenticator();
  auth.setToken("edge/dev1", "tok");
  const links: Link[] = [];
  let waiting = deferred<Link>();
  const server = new MqttLinkServer({
    url,
    keys: auth,
    registry: new MemoryLinkRegistry(),
    sessionExpirySeconds: 10,
  });
  const ac = new AbortController();
  const running = server.run(ac.signal, (link) => {
    links.push(link);
    waiting.resolve(link);
  });
  try {
    await server.ready;
    await server.addDevice("edge/dev1", "ns-dev1");
    let taken = 0;
    await fn({
      broker,
      url,
      server,
      nextLink: async () => {
        while (links.length <= taken) {
          await waiting.promise;
          waiting = deferred<Link>();
        }
        return links[taken++]!;
      },
      dialer: (extra = {}) =>
        new MqttLinkDialer({
          url,
          device: "edge/dev1",
          messageNamespace: "ns-dev1",
          token: "tok",
          dialTimeoutMs: 5_000,
          ...extra,
        }),
    });
  } finally {
    ac.abort();
    await running;
    await broker.stop();
  }
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("the dialer validates its options without I/O", () => {
  const base = { url: "mqtt://127.0.0.1:1", device: "edge/d", messageNamespace: "ns", token: "t" };
  assert.throws(() => new MqttLinkDialer({ ...base, device: "nodevice" }), InvalidInputError);
  assert.throws(() => new MqttLinkDialer({ ...base, messageNamespace: "a/#" }), InvalidInputError);
  assert.throws(() => new MqttLinkDialer({ ...base, messageNamespace: "" }), InvalidInputError);
  assert.throws(() => new MqttLinkDialer({ ...base, keepaliveSeconds: 0 }), InvalidInputError);
  assert.throws(() => new MqttLinkDialer({ ...base, keepaliveSeconds: 70000 }), InvalidInputError);
  assert.throws(() => new MqttLinkDialer({ ...base, url: "http://x" }), /"http:\/\/x"/);
  assert.equal(new MqttLinkDialer(base).clientId, "arhat-edge-d");
  assert.equal(defaultMqttClientId("my.ns/dev_1:x"), "arhat-my-ns-dev_1-x");
});

Deno.test("dialing an unreachable broker fails with UnavailableError", async () => {
  const dialer = new MqttLinkDialer({
    url: `mqtt://127.0.0.1:${freePort()}`,
    device: "edge/dev1",
    messageNamespace: "ns",
    token: "t",
    dialTimeoutMs: 5_000,
  });
  const t0 = Date.now();
  await assert.rejects(dialer.dial(AbortSignal.timeout(10_000)), UnavailableError);
  assert.ok(Date.now() - t0 < 4_000, "a refused connection fails fast");
});

Deno.test("a dial canceled before it starts fails with CanceledError", async () => {
  const dialer = new MqttLinkDialer({
    url: "mqtt://127.0.0.1:1",
    device: "edge/dev1",
    messageNamespace: "ns",
    token: "t",
  });
  await assert.rejects(dialer.dial(AbortSignal.abort()), CanceledError);
});

Deno.test("a dial nobody answers times out, and an abort cancels it", async () => {
  const broker = await startMosquitto();
  try {
    const logStart = (await Deno.readTextFile(broker.logFile)).length;
    const url = `mqtt://${broker.address}`;
    const silent = (dialTimeoutMs: number) =>
      new MqttLinkDialer({
        url,
        device: "edge/dev1",
        messageNamespace: "nobody-listens",
        token: "t",
        dialTimeoutMs,
      });
    const goodbyes: string[] = [];
    const watcher = await mqtt.connectAsync(url, { clientId: "watcher", reconnectPeriod: 0 });
    await watcher.subscribeAsync("nobody-listens/status", { qos: 1 });
    watcher.on("message", (_t, p) => {
      const s = decodeState(decodeMsg(p).payload);
      goodbyes.push(StateKind[s.kind]);
    });
    try {
      const t0 = Date.now();
      await assert.rejects(
        silent(600).dial(AbortSignal.timeout(10_000)),
        (err) => err instanceof UnavailableError && /did not answer/.test(err.message),
      );
      assert.ok(Date.now() - t0 >= 600);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 300);
      await assert.rejects(silent(10_000).dial(ac.signal), CanceledError);
      // Each failed dial announced itself, said goodbye, and left no connection.
      await waitFor("the goodbyes", () => goodbyes.length === 4);
      assert.deepEqual(goodbyes, ["ONLINE", "OFFLINE", "ONLINE", "OFFLINE"]);
      const log = (await Deno.readTextFile(broker.logFile)).slice(logStart).split("\n");
      const id = defaultMqttClientId("edge/dev1");
      assert.equal(log.filter((l) => l.includes(` as ${id} `)).length, 2, log.join("\n"));
      assert.equal(log.filter((l) => l.includes(`Client ${id} disconnected`)).length, 2);
    } finally {
      await watcher.endAsync(true);
    }
  } finally {
    await broker.stop();
  }
});

Deno.test("only aranya's proven acceptance links, and only frames sealed for this connection arrive", async () => {
  const broker = await startMosquitto();
  const url = `mqtt://${broker.address}`;
  const token = "a-long-device-token-0123456789";
  // A hand-written aranya that knows the device's token: answers the ONLINE with traffic meant
  // for earlier connections, a forged acceptance, then the real one and frames, sealed or not.
  const fake = await mqtt.connectAsync(url, { clientId: "fake-aranya", reconnectPeriod: 0 });
  const announcements: Uint8Array[] = [];
  try {
    await fake.subscribeAsync("ns-dev1/status", { qos: 1 });
    fake.on("message", (_topic, payload) => {
      announcements.push(new Uint8Array(payload));
      const state = decodeState(decodeMsg(payload).payload);
      if (state.kind !== StateKind.ONLINE) return;
      const id = state.connectionId;
      const key = linkKey(token);
      const nd = state.nonce!;
      const na = newNonce();
      const keys = sessionKeys(key, id, nd, na);
      const elsewhere = sessionKeys(linkKey("someone-else's token"), id, nd, na);
      const frames = [
        enc("stale-1"),
        acceptFrame({ connectionId: "an-earlier-connection", nonce: na, mac: new Uint8Array(32) }),
        rejectFrame(new AlreadyExistsError("not you"), "an-earlier-connection"),
        // The right connection id, but no proof of the key: ignored.
        acceptFrame({ connectionId: id, nonce: na, mac: new Uint8Array(32) }),
        enc("stale-2"),
        acceptFrame({ connectionId: id, nonce: na, mac: acceptMac(key, "edge/dev1", id, nd, na) }),
        enc("plaintext, as anyone on the broker could publish"),
        new FrameSealer(elsewhere.cmd, id).seal(enc("sealed with another key")),
        new FrameSealer(keys.cmd, id).seal(enc("fresh")),
      ];
      for (const f of frames) fake.publish("ns-dev1/cmd", Buffer.from(f), { qos: 1 });
    });
    const device = await new MqttLinkDialer({
      url,
      device: "edge/dev1",
      messageNamespace: "ns-dev1",
      token,
      dialTimeoutMs: 5_000,
    }).dial(AbortSignal.timeout(10_000));
    const got: string[] = [];
    device.start((f) => got.push(dec(f)));
    await waitFor("the fresh frame", () => got.length > 0);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(got, ["fresh"]);
    device.close();
    await device.closed;
    await waitFor("the OFFLINE", () => announcements.length >= 2);
    for (const a of announcements) {
      assert.ok(!Buffer.from(a).includes(token), "the token is never published");
    }
  } finally {
    await fake.endAsync(true);
    await broker.stop();
  }
});

Deno.test("link-control frames for other connections are skipped once linked", async () => {
  await withServer(async ({ url, dialer, nextLink }) => {
    const device = await dialer().dial(AbortSignal.timeout(10_000));
    const serverLink = await nextLink();
    const got: Uint8Array[] = [];
    device.start((f) => got.push(f));
    const raw = await mqtt.connectAsync(url, { clientId: "other-conn", reconnectPeriod: 0 });
    try {
      // An acceptance and a rejection meant for someone else.
      const ack = encodeCmd({
        kind: CmdKind.CMD_UNSPECIFIED,
        sid: 0n,
        seq: 0n,
        complete: true,
        payload: enc("someone-else"),
      });
      await raw.publishAsync("ns-dev1/cmd", Buffer.from(ack), { qos: 1 });
      const reject = rejectFrame(new AlreadyExistsError("not you"), "someone-else");
      await raw.publishAsync("ns-dev1/cmd", Buffer.from(reject), { qos: 1 });
    } finally {
      await raw.endAsync();
    }
    await serverLink.send(enc("after the noise"));
    await waitFor("the real frame", () => got.length > 0);
    assert.deepEqual(got.map(dec), ["after the noise"]);
    let closed = false;
    device.closed.then(() => closed = true);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(closed, false);
    // A rejection without a connection id, after acceptance, ends the link.
    await serverLink.send(rejectFrame(new UnavailableError("session layer refused")));
    const info = await device.closed;
    assert.equal(info.by, "remote");
    assert.match(info.reason, /session layer refused/);
    serverLink.close();
  });
});

Deno.test("sends after close reject and close is idempotent", async () => {
  await withServer(async ({ dialer, nextLink }) => {
    const device = await dialer().dial(AbortSignal.timeout(10_000));
    const serverLink = await nextLink();
    device.close("bye");
    device.close("bye again");
    assert.deepEqual(await device.closed, { by: "local", reason: "bye" });
    await assert.rejects(device.send(enc("late")), UnavailableError);
    assert.equal((await serverLink.closed).by, "remote");
  });
});

Deno.test("two agents with one client id: the broker hands the session to the newer one", async () => {
  await withServer(async ({ dialer, nextLink }) => {
    const older = await dialer().dial(AbortSignal.timeout(10_000));
    const olderServer = await nextLink();
    // Same default client id: not aranya's "already connected" rule but an MQTT
    // session takeover decides (see the dialer's module doc).
    const newer = await dialer().dial(AbortSignal.timeout(10_000));
    const newerServer = await nextLink();
    assert.equal((await older.closed).by, "error");
    assert.equal((await olderServer.closed).by, "remote");
    let newerClosed = false;
    newerServer.closed.then(() => newerClosed = true);
    const got: string[] = [];
    newer.start((f) => got.push(dec(f)));
    await newerServer.send(enc("to the newer"));
    await waitFor("the frame", () => got.length === 1);
    assert.equal(newerClosed, false);
    newer.close();
  });
});

/** A mosquitto that refuses every client (no anonymous access, no users). */
async function startRefusingBroker(): Promise<{ url: string; stop(): Promise<void> }> {
  const dir = await ensureDir(`${stateDir("mosquitto-refusing")}/${crypto.randomUUID()}`);
  const port = freePort();
  await Deno.writeTextFile(
    `${dir}/mosquitto.conf`,
    `allow_anonymous false\nlog_dest stderr\nlistener ${port} 127.0.0.1\n`,
  );
  const svc = await startService({
    name: "mosquitto-refusing",
    cmd: "mosquitto",
    args: ["-c", `${dir}/mosquitto.conf`],
    logFile: `${dir}/mosquitto.log`,
    pidFile: `${dir}/service.pid`,
  });
  await waitReady(svc, async () => {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  }, 10_000);
  return {
    url: `mqtt://127.0.0.1:${port}`,
    stop: async () => {
      await svc.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("a broker refusing the device's credentials fails the dial with UnauthenticatedError", async () => {
  const broker = await startRefusingBroker();
  try {
    const dialer = new MqttLinkDialer({
      url: broker.url,
      device: "edge/dev1",
      messageNamespace: "ns",
      token: "t",
      username: "nobody",
      password: "nothing",
      dialTimeoutMs: 5_000,
    });
    await assert.rejects(
      dialer.dial(AbortSignal.timeout(10_000)),
      (err) => err instanceof UnauthenticatedError && /refused the credentials/.test(err.message),
    );
  } finally {
    await broker.stop();
  }
});
