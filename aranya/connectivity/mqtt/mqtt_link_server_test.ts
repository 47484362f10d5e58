/**
 * MqttLinkServer against a real mosquitto, with real MqttLinkDialers as
 * devices: authentication, the one-live-link rule, frame order and sizes,
 * broker restarts and the one-connection-for-all-devices property.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import { MqttLinkDialer } from "@aranya/arhat/connectivity/mqtt/mqtt_link_dialer";
import { deferred } from "@aranya/common/deferred";
import { encodeMsg, MsgKind } from "@aranya/common/envelope";
import {
  AlreadyExistsError,
  InvalidInputError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { Link, LinkCloseInfo } from "@aranya/common/link";
import { createCa, issueLeaf } from "@aranya/e2e/cluster/pki";
import { ensureDir, stateDir } from "@aranya/e2e/paths";
import { freePort, type ServiceProcess, startService, waitReady } from "@aranya/e2e/process";
import { type Broker, startMosquitto } from "@aranya/e2e/services/mosquitto";
import { SessionServer } from "@aranya/common/session/session_server";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import { MqttLinkServer, type MqttLinkServerOptions } from "./mqtt_link_server.ts";

/** A broker, a running server and what it accepted. */
interface Env {
  broker: BrokerLike;
  url: string;
  server: MqttLinkServer;
  auth: StaticAuthenticator;
  registry: MemoryLinkRegistry;
  links: Link[];
  /** What the broker logged since it started for this test. */
  brokerLog(): Promise<string>;
  /** Resolves with the n-th accepted link (0-based). */
  nthLink(n: number): Promise<Link>;
  /** A dialer for `device` after registering it on the server. */
  dialer(device: string, token: string, extra?: Partial<DialerExtra>): Promise<MqttLinkDialer>;
  stop(): Promise<void>;
}

interface DialerExtra {
  clientId: string;
  maxFrameSize: number;
  keepaliveSeconds: number;
  dialTimeoutMs: number;
}

let dialers = 0;

/** What the tests need of a broker. */
type BrokerLike = Pick<Broker, "address" | "stop"> & { instance?: string };

async function setup(
  serverOpts: Partial<MqttLinkServerOptions> = {},
  broker?: BrokerLike,
): Promise<Env> {
  const b = broker ?? await startMosquitto();
  const logFile = "logFile" in b && typeof b.logFile === "string"
    ? b.logFile
    : `${stateDir("mosquitto")}/mosquitto.log`;
  const logOffset = await Deno.readTextFile(logFile).then((t) => t.length, () => 0);
  const url = `mqtt://${b.address}`;
  const auth = new StaticAuthenticator();
  const registry = new MemoryLinkRegistry();
  const links: Link[] = [];
  const waiters: { n: number; d: ReturnType<typeof deferred<Link>> }[] = [];
  const server = new MqttLinkServer({
    url,
    keys: auth,
    registry,
    reconnectPeriodMs: 200,
    // The broker's persistence outlives the test: let sessions expire soon.
    sessionExpirySeconds: 10,
    ...serverOpts,
  });
  const ac = new AbortController();
  const running = server.run(ac.signal, (link) => {
    links.push(link);
    for (const w of waiters) if (w.n === links.length - 1) w.d.resolve(link);
  });
  running.catch(() => {});
  try {
    await server.ready;
  } catch (err) {
    ac.abort();
    await b.stop();
    throw err;
  }
  return {
    broker: b,
    url,
    server,
    auth,
    registry,
    links,
    async brokerLog() {
      return (await Deno.readTextFile(logFile)).slice(logOffset);
    },
    nthLink(n) {
      if (links[n]) return Promise.resolve(links[n]);
      const d = deferred<Link>();
      waiters.push({ n, d });
      return d.promise;
    },
    async dialer(device, token, extra = {}) {
      await server.addDevice(device, `aranya-test/${device}`);
      return new MqttLinkDialer({
        url,
        device,
        messageNamespace: `aranya-test/${device}`,
        token,
        // Distinct client ids, so that the broker's session takeover does not
        // decide between two dialers of one device (see the dialer's doc).
        clientId: `arhat-test-${++dialers}`,
        dialTimeoutMs: 5_000,
        ...extra,
      });
    },
    async stop() {
      ac.abort();
      await running.catch(() => {});
      await b.stop();
    },
  };
}

/** Collects the frames a link delivers. */
function collect(link: Link): Uint8Array[] {
  const frames: Uint8Array[] = [];
  link.start((f) => frames.push(f.slice()));
  return frames;
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("a device with the right token is accepted and frames flow both ways", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/dev1", "s3cret");
    const dialer = await env.dialer("edge/dev1", "s3cret");
    const device = await dialer.dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    assert.equal(server.device, "edge/dev1");
    assert.equal(server.transport, "mqtt");
    assert.equal(device.device, "edge/dev1");
    assert.equal(env.registry.get("edge/dev1"), server);
    const up = collect(server);
    const down = collect(device);
    await device.send(enc("hello aranya"));
    await server.send(enc("hello device"));
    await waitFor("both frames", () => up.length === 1 && down.length === 1);
    assert.equal(dec(up[0]!), "hello aranya");
    assert.equal(dec(down[0]!), "hello device");

    // The device's goodbye closes aranya's side as "remote".
    device.close("test done");
    const info = await withTimeout(server.closed, 5_000, "server link closed");
    assert.equal(info.by, "remote");
    assert.equal(env.registry.get("edge/dev1"), undefined);
  } finally {
    await env.stop();
  }
});

Deno.test("a wrong token is rejected and nothing of that connection is delivered", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/dev1", "right");
    const dialer = await env.dialer("edge/dev1", "wrong");
    await assert.rejects(dialer.dial(AbortSignal.timeout(10_000)), UnauthenticatedError);
    // An unknown device is rejected the same way.
    const stranger = await env.dialer("edge/nobody", "x");
    await assert.rejects(stranger.dial(AbortSignal.timeout(10_000)), UnauthenticatedError);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(env.links.length, 0);
    assert.equal(env.registry.size, 0);
    // The server still accepts the right token afterwards.
    const good = await env.dialer("edge/dev1", "right");
    const link = await good.dial(AbortSignal.timeout(10_000));
    assert.equal((await env.nthLink(0)).device, "edge/dev1");
    link.close();
  } finally {
    await env.stop();
  }
});

Deno.test("a device announcing itself on another device's namespace is rejected", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/a", "ta");
    env.auth.setToken("edge/b", "tb");
    await env.server.addDevice("edge/a", "aranya-test/edge/a");
    // b has valid credentials of its own but uses a's namespace.
    const impostor = new MqttLinkDialer({
      url: env.url,
      device: "edge/b",
      messageNamespace: "aranya-test/edge/a",
      token: "tb",
      clientId: "arhat-impostor",
      dialTimeoutMs: 5_000,
    });
    await assert.rejects(impostor.dial(AbortSignal.timeout(10_000)), UnauthenticatedError);
    assert.equal(env.links.length, 0);
  } finally {
    await env.stop();
  }
});

Deno.test("a second connection of a connected device is rejected and nothing from it is delivered", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/dev1", "tok");
    const first = await (await env.dialer("edge/dev1", "tok")).dial(AbortSignal.timeout(10_000));
    // Its session layer answers aranya's liveness probe, as arhat's does.
    new SessionServer(first, { dispatcher: { handler: () => undefined } }).start();
    const serverLink = await env.nthLink(0);
    const up = collect(serverLink);
    const second = await env.dialer("edge/dev1", "tok");
    await assert.rejects(
      second.dial(AbortSignal.timeout(10_000)),
      (err) => err instanceof AlreadyExistsError && /already connected/.test(err.message),
    );
    assert.equal(env.links.length, 1);
    assert.equal(env.registry.get("edge/dev1"), serverLink);
    // The first connection is untouched and is the only one heard.
    await first.send(enc("from first"));
    await waitFor("the first's frame", () => up.length === 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(up.map(dec), ["from first"]);
    first.close();
  } finally {
    await env.stop();
  }
});

Deno.test("1000 frames arrive in order both ways", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/dev1", "tok");
    const device = await (await env.dialer("edge/dev1", "tok")).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    const up = collect(server);
    const down = collect(device);
    const n = 1000;
    await Promise.all([
      Promise.all(Array.from({ length: n }, (_, i) => device.send(enc(`up-${i}`)))),
      Promise.all(Array.from({ length: n }, (_, i) => server.send(enc(`down-${i}`)))),
    ]);
    await waitFor("all frames", () => up.length === n && down.length === n, 15_000);
    assert.deepEqual(up.map(dec), Array.from({ length: n }, (_, i) => `up-${i}`));
    assert.deepEqual(down.map(dec), Array.from({ length: n }, (_, i) => `down-${i}`));
    device.close();
  } finally {
    await env.stop();
  }
});

Deno.test("a frame of 120 KiB crosses both ways intact", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/dev1", "tok");
    const device = await (await env.dialer("edge/dev1", "tok")).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    const up = collect(server);
    const down = collect(device);
    const big = new Uint8Array(120 * 1024);
    crypto.getRandomValues(big.subarray(0, 65536));
    crypto.getRandomValues(big.subarray(65536));
    await device.send(big.slice());
    await server.send(big.slice());
    await waitFor("the big frames", () => up.length === 1 && down.length === 1);
    assert.deepEqual(up[0], big);
    assert.deepEqual(down[0], big);
    device.close();
  } finally {
    await env.stop();
  }
});

Deno.test("an oversized frame closes only that device's link", async () => {
  const env = await setup({ maxFrameSize: 64 * 1024 });
  try {
    env.auth.setToken("edge/big", "t1");
    env.auth.setToken("edge/small", "t2");
    // The sender's own limit is higher than aranya's, so the frame leaves the device.
    const big = await (await env.dialer("edge/big", "t1", { maxFrameSize: 256 * 1024 }))
      .dial(AbortSignal.timeout(10_000));
    const bigServer = await env.nthLink(0);
    const small = await (await env.dialer("edge/small", "t2")).dial(AbortSignal.timeout(10_000));
    const smallServer = await env.nthLink(1);
    const bigUp = collect(bigServer);
    const smallUp = collect(smallServer);

    await big.send(new Uint8Array(64 * 1024 + 1));
    const info = await withTimeout(bigServer.closed, 5_000, "oversized link closed");
    assert.equal(info.by, "error");
    assert.match(info.reason, /65537 bytes/);
    assert.equal(bigUp.length, 0);
    // aranya tells the device, whose link closes too.
    const deviceInfo = await withTimeout(big.closed, 5_000, "device link closed");
    assert.equal(deviceInfo.by, "remote");

    await small.send(enc("still here"));
    await waitFor("the other device's frame", () => smallUp.length === 1);
    assert.equal(dec(smallUp[0]!), "still here");
    const down = collect(small);
    await smallServer.send(enc("you too"));
    await waitFor("the frame down", () => down.length === 1);
    small.close();
  } finally {
    await env.stop();
  }
});

Deno.test("aranya closing a link tells the device", async () => {
  const env = await setup();
  try {
    env.auth.setToken("edge/dev1", "tok");
    const device = await (await env.dialer("edge/dev1", "tok")).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    server.close("session layer gave up");
    assert.equal((await server.closed).by, "local");
    const info = await withTimeout(device.closed, 5_000, "device link closed");
    assert.equal(info.by, "remote");
    assert.match(info.reason, /session layer gave up/);
    await assert.rejects(server.send(enc("late")), /closed/);
    // The device can dial again and is accepted.
    const again = await (await env.dialer("edge/dev1", "tok")).dial(AbortSignal.timeout(10_000));
    assert.equal((await env.nthLink(1)).device, "edge/dev1");
    again.close();
  } finally {
    await env.stop();
  }
});

Deno.test("a broker restart closes the links and a new dial then works", async () => {
  const env = await setup();
  let broker = env.broker;
  try {
    env.auth.setToken("edge/dev1", "tok");
    const dialer = await env.dialer("edge/dev1", "tok");
    const device = await dialer.dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    const port = Number(broker.address.split(":")[1]);

    await broker.stop();
    const [s, d] = await withTimeout(
      Promise.all([server.closed, device.closed]),
      5_000,
      "links closed by the broker stop",
    ) as [LinkCloseInfo, LinkCloseInfo];
    // aranya's link closes either through its own lost connection ("error")
    // or, when mosquitto hands out the device's will while shutting down
    // before it drops aranya, through the device's OFFLINE ("remote").
    assert.ok(s.by === "error" || s.by === "remote", `closed by ${s.by}`);
    assert.equal(d.by, "error");
    assert.equal(env.server.connected, false);
    assert.equal(env.registry.size, 0);

    broker = await startMosquitto({ port, instance: broker.instance });
    env.broker = broker;
    await waitFor("aranya reconnected", () => env.server.connected, 10_000);
    const again = await dialer.dial(AbortSignal.timeout(10_000));
    const server2 = await env.nthLink(1);
    const up = collect(server2);
    await again.send(enc("after restart"));
    await waitFor("a frame after the restart", () => up.length === 1);
    assert.equal(dec(up[0]!), "after restart");
    again.close();
  } finally {
    await env.stop();
  }
});

Deno.test("many devices share aranya's one MQTT connection", async () => {
  const env = await setup();
  try {
    const n = 20;
    const devices = Array.from({ length: n }, (_, i) => `edge/many-${i}`);
    for (const d of devices) env.auth.setToken(d, `tok-${d}`);
    const links = await Promise.all(
      devices.map(async (d) => (await env.dialer(d, `tok-${d}`)).dial(AbortSignal.timeout(15_000))),
    );
    await waitFor("all accepted", () => env.links.length === n);
    assert.deepEqual(env.links.map((l) => l.device).sort(), [...devices].sort());
    // Every device gets its own frame down, through the one connection.
    const got = links.map((l) => collect(l));
    await Promise.all(env.links.map((l) => l.send(enc(`to ${l.device}`))));
    await waitFor("frames down", () => got.every((g) => g.length === 1));
    got.forEach((frames, i) => assert.equal(dec(frames[0]!), `to ${devices[i]}`));

    // The broker saw one connection per device plus exactly one from aranya.
    const connects = (await env.brokerLog()).split("\n").filter((l) =>
      l.includes("New client connected")
    );
    const fromAranya = connects.filter((l) => l.includes(` as ${env.server.clientId} `));
    assert.equal(fromAranya.length, 1, connects.join("\n"));
    assert.equal(connects.length, n + 1, connects.join("\n"));
    for (const l of links) l.close();
  } finally {
    await env.stop();
  }
});

/**
 * A TCP relay between a device and the broker that can cut its connections
 * (sockets closed without an MQTT DISCONNECT) or freeze them (nothing passes,
 * nothing closes: a silent network partition).
 */
class TcpRelay {
  readonly #listener: Deno.Listener;
  readonly #target: number;
  readonly #conns: Deno.Conn[] = [];
  #frozen = false;
  #accepting: Promise<void>;

  constructor(targetPort: number) {
    this.#target = targetPort;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  async #accept(): Promise<void> {
    try {
      for await (const a of this.#listener) {
        const b = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
        this.#conns.push(a, b);
        this.#pump(a, b);
        this.#pump(b, a);
      }
    } catch { /* listener closed */ }
  }

  async #pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        if (this.#frozen) continue; // swallowed: the peer hears nothing
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch { /* closed */ }
    if (!this.#frozen) this.cut();
  }

  /** Closes every relayed socket abruptly. */
  cut(): void {
    for (const c of this.#conns.splice(0)) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  }

  /** Stops forwarding in both directions; the sockets stay open. */
  freeze(): void {
    this.#frozen = true;
  }

  async close(): Promise<void> {
    this.#frozen = false;
    this.cut();
    this.#listener.close();
    await this.#accepting;
  }
}

Deno.test("a device whose socket closes without DISCONNECT is closed by its will", async () => {
  const env = await setup();
  const relay = new TcpRelay(Number(env.broker.address.split(":")[1]));
  try {
    env.auth.setToken("edge/dev1", "tok");
    await env.server.addDevice("edge/dev1", "aranya-test/edge/dev1");
    const device = await new MqttLinkDialer({
      url: `mqtt://127.0.0.1:${relay.port}`,
      device: "edge/dev1",
      messageNamespace: "aranya-test/edge/dev1",
      token: "tok",
      dialTimeoutMs: 5_000,
    }).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    relay.cut();
    const info = await withTimeout(server.closed, 5_000, "aranya's link closed by the will");
    assert.equal(info.by, "remote");
    assert.match(info.reason, /offline/);
    assert.equal((await withTimeout(device.closed, 5_000, "device link closed")).by, "error");
  } finally {
    await relay.close();
    await env.stop();
  }
});

Deno.test("a silently vanished device is closed by its will once the broker's keepalive expires", async () => {
  const env = await setup();
  const relay = new TcpRelay(Number(env.broker.address.split(":")[1]));
  try {
    env.auth.setToken("edge/dev1", "tok");
    await env.server.addDevice("edge/dev1", "aranya-test/edge/dev1");
    const keepaliveSeconds = 2;
    const device = await new MqttLinkDialer({
      url: `mqtt://127.0.0.1:${relay.port}`,
      device: "edge/dev1",
      messageNamespace: "aranya-test/edge/dev1",
      token: "tok",
      keepaliveSeconds,
      dialTimeoutMs: 5_000,
    }).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    const t0 = Date.now();
    relay.freeze();
    const info = await withTimeout(server.closed, 15_000, "aranya's link closed by the will");
    const took = Date.now() - t0;
    assert.equal(info.by, "remote");
    // The broker gives up after 1.5 keepalives of silence, noticed at its next
    // keepalive sweep: mosquitto 2.0.11 sweeps about every 5 s (measured:
    // keepalive 1 s -> 4.9 s, 2 s -> 5.7 s, 5 s -> 11.8 s).
    assert.ok(took >= keepaliveSeconds * 1500 - 200, `the will came early, after ${took} ms`);
    assert.ok(took <= keepaliveSeconds * 1500 + 5_000, `took ${took} ms`);
    // The device's own keepalive notices the silence too.
    assert.equal((await withTimeout(device.closed, 10_000, "device link closed")).by, "error");
  } finally {
    await relay.close();
    await env.stop();
  }
});

Deno.test("aranya losing its broker connection closes its links and tells the devices", async () => {
  const broker = await startMosquitto();
  const relay = new TcpRelay(Number(broker.address.split(":")[1]));
  // aranya goes through the relay; the device connects to the broker directly.
  const env = await setup({ url: `mqtt://127.0.0.1:${relay.port}` }, broker);
  try {
    env.auth.setToken("edge/dev1", "tok");
    await env.server.addDevice("edge/dev1", "aranya-test/edge/dev1");
    const device = await new MqttLinkDialer({
      url: `mqtt://${broker.address}`,
      device: "edge/dev1",
      messageNamespace: "aranya-test/edge/dev1",
      token: "tok",
      dialTimeoutMs: 5_000,
    }).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    relay.cut();
    const info = await withTimeout(server.closed, 5_000, "aranya's link closed");
    assert.equal(info.by, "error");
    assert.match(info.reason, /lost its connection/);
    assert.equal(env.registry.size, 0);
    // Once aranya is back, the device hears that its link is gone.
    await waitFor("aranya reconnected", () => env.server.connected, 10_000);
    const deviceInfo = await withTimeout(device.closed, 5_000, "device link closed");
    assert.equal(deviceInfo.by, "remote");
    assert.match(deviceInfo.reason, /lost its connection/);
  } finally {
    await env.stop();
    await relay.close();
  }
});

Deno.test("stopping the server closes every link and tells the devices", async () => {
  const env = await setup();
  let broker: BrokerLike | undefined;
  try {
    env.auth.setToken("edge/a", "ta");
    env.auth.setToken("edge/b", "tb");
    const a = await (await env.dialer("edge/a", "ta")).dial(AbortSignal.timeout(10_000));
    const b = await (await env.dialer("edge/b", "tb")).dial(AbortSignal.timeout(10_000));
    const [sa, sb] = [await env.nthLink(0), await env.nthLink(1)];
    // Stop only the server; keep the broker up to watch the devices.
    broker = env.broker;
    env.broker = { address: broker.address, stop: () => Promise.resolve() };
    await env.stop();
    assert.equal((await sa.closed).by, "local");
    assert.equal((await sb.closed).by, "local");
    for (const d of [a, b]) {
      const info = await withTimeout(d.closed, 5_000, "device link closed");
      assert.equal(info.by, "remote");
      assert.match(info.reason, /shutting down/);
    }
    await assert.rejects(env.server.addDevice("edge/c", "aranya-test/edge/c"), /stopped/);
  } finally {
    await env.stop();
    await broker?.stop();
  }
});

Deno.test("device registration validates names and keeps namespaces unique", async () => {
  const env = await setup();
  try {
    await assert.rejects(env.server.addDevice("no-slash", "ns1"), /"<namespace>\/<name>"/);
    await assert.rejects(env.server.addDevice("edge/x", "bad/+/ns"), /not a valid MQTT topic/);
    await assert.rejects(env.server.addDevice("edge/x", "$SYS/x"), /not a valid MQTT topic/);
    await env.server.addDevice("edge/x", "shared-ns");
    await env.server.addDevice("edge/x", "shared-ns"); // idempotent
    await assert.rejects(env.server.addDevice("edge/y", "shared-ns"), AlreadyExistsError);
    assert.deepEqual([...env.server.devices], [["edge/x", "shared-ns"]]);

    // Removing a device closes its live link and stops listening to it.
    env.auth.setToken("edge/x", "tx");
    const device = await new MqttLinkDialer({
      url: env.url,
      device: "edge/x",
      messageNamespace: "shared-ns",
      token: "tx",
      dialTimeoutMs: 5_000,
    }).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    env.server.removeDevice("edge/x");
    assert.equal((await server.closed).by, "local");
    assert.equal((await withTimeout(device.closed, 5_000, "device link closed")).by, "remote");
    assert.equal(env.server.devices.size, 0);
    // The namespace is free again, for another device.
    await env.server.addDevice("edge/y", "shared-ns");
  } finally {
    await env.stop();
  }
});

Deno.test("garbage on status and msg topics is ignored and the server keeps serving", async () => {
  const env = await setup();
  const raw = await mqtt.connectAsync(env.url, { clientId: "garbage", reconnectPeriod: 0 });
  try {
    env.auth.setToken("edge/dev1", "tok");
    const dialer = await env.dialer("edge/dev1", "tok");
    const ns = "aranya-test/edge/dev1";
    // Not a Msg at all; a Msg of the wrong kind; frames on msg with no link.
    await raw.publishAsync(`${ns}/status`, Buffer.from([0xff, 0xff, 0xff]), { qos: 1 });
    await raw.publishAsync(
      `${ns}/status`,
      Buffer.from(encodeMsg({
        kind: MsgKind.MSG_DONE,
        sid: 7n,
        seq: 0n,
        complete: true,
        payload: new Uint8Array(),
      })),
      { qos: 1 },
    );
    await raw.publishAsync(`${ns}/msg`, Buffer.from("before any link"), { qos: 1 });
    const device = await dialer.dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    const up = collect(server);
    await device.send(enc("first real frame"));
    await waitFor("the real frame", () => up.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(up.map(dec), ["first real frame"]);
    assert.equal(env.server.connected, true);
    device.close();
  } finally {
    await raw.endAsync(true);
    await env.stop();
  }
});

/** A throwaway mosquitto with its own configuration (beside the shared one). */
async function startCustomBroker(
  config: (port: number, dir: string) => Promise<string>,
): Promise<{ port: number; stop(): Promise<void> }> {
  const dir = await ensureDir(`${stateDir("mosquitto-custom")}/${crypto.randomUUID()}`);
  const port = freePort();
  let svc: ServiceProcess | undefined;
  try {
    await Deno.writeTextFile(`${dir}/mosquitto.conf`, await config(port, dir));
    svc = await startService({
      name: "mosquitto-custom",
      cmd: "mosquitto",
      args: ["-c", `${dir}/mosquitto.conf`],
      logFile: `${dir}/mosquitto.log`,
      pidFile: `${dir}/service.pid`,
    });
    await waitReady(svc, async () => {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    }, 10_000);
  } catch (err) {
    await svc?.stop();
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
  return {
    port,
    stop: async () => {
      await svc.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A mosquitto that refuses every client (no anonymous access, no users). */
async function startRefusingBroker(): Promise<{ url: string; stop(): Promise<void> }> {
  const b = await startCustomBroker((port) =>
    Promise.resolve(`allow_anonymous false\nlog_dest stderr\nlistener ${port} 127.0.0.1\n`)
  );
  return { url: `mqtt://127.0.0.1:${b.port}`, stop: b.stop };
}

Deno.test("run rejects when the broker refuses aranya's credentials", async () => {
  const broker = await startRefusingBroker();
  try {
    const server = new MqttLinkServer({
      url: broker.url,
      username: "aranya",
      password: "wrong",
      keys: new StaticAuthenticator(),
      registry: new MemoryLinkRegistry(),
    });
    const ac = new AbortController();
    await assert.rejects(
      server.run(ac.signal, () => {}),
      (err) => err instanceof UnauthenticatedError && /refused client/.test(err.message),
    );
    await assert.rejects(server.ready, UnauthenticatedError);
    assert.equal(server.connected, false);
  } finally {
    await broker.stop();
  }
});

Deno.test("the server validates its options without I/O", () => {
  const base = {
    url: "mqtt://127.0.0.1:1",
    keys: new StaticAuthenticator(),
    registry: new MemoryLinkRegistry(),
  };
  assert.throws(() => new MqttLinkServer({ ...base, url: "ws://x" }), /"ws:\/\/x"/);
  assert.throws(() => new MqttLinkServer({ ...base, maxFrameSize: 1.5 }), /maxFrameSize/);
  for (const keepaliveSeconds of [0, 1.5, 65536, -1, NaN]) {
    assert.throws(
      () => new MqttLinkServer({ ...base, keepaliveSeconds }),
      (err) =>
        err instanceof InvalidInputError &&
        err.message.includes(`Keepalive of ${keepaliveSeconds} seconds`),
    );
  }
  assert.throws(() => new MqttLinkServer({ ...base, probeTimeoutMs: 0 }), /Probe timeout of 0 ms/);
  const server = new MqttLinkServer(base);
  assert.match(server.clientId, /^aranya-[0-9a-f]{8}$/);
  assert.equal(server.maxFrameSize, 128 * 1024);
  assert.equal(server.connected, false);
});

Deno.test("server and dialer talk through a broker that requires mutual TLS", async () => {
  let ca = "";
  let aranyaPair = { cert: "", key: "" };
  let devicePair = { cert: "", key: "" };
  const broker = await startCustomBroker(async (port, dir) => {
    const pki = await ensureDir(`${dir}/pki`);
    const caPair = await createCa(pki, "mqtt-test-ca");
    const server = await issueLeaf(pki, caPair, {
      name: "broker",
      subject: "/CN=localhost",
      usage: "server",
      sans: ["DNS:localhost", "IP:127.0.0.1"],
    });
    const read = async (p: { cert: string; key: string }) => ({
      cert: await Deno.readTextFile(p.cert),
      key: await Deno.readTextFile(p.key),
    });
    aranyaPair = await read(
      await issueLeaf(pki, caPair, { name: "aranya", subject: "/CN=aranya", usage: "client" }),
    );
    devicePair = await read(
      await issueLeaf(pki, caPair, { name: "device", subject: "/CN=edge-dev1", usage: "client" }),
    );
    ca = await Deno.readTextFile(caPair.cert);
    return [
      "allow_anonymous true",
      // Run as the invoking user (root here) so mosquitto can read the key it was given.
      "user root",
      "log_dest stderr",
      `listener ${port} 127.0.0.1`,
      `cafile ${caPair.cert}`,
      `certfile ${server.cert}`,
      `keyfile ${server.key}`,
      "require_certificate true",
      "",
    ].join("\n");
  });
  const url = `mqtts://127.0.0.1:${broker.port}`;
  const env = await setup({ url, ca, ...aranyaPair, servername: "localhost" }, {
    address: `127.0.0.1:${broker.port}`,
    stop: broker.stop,
  });
  try {
    env.auth.setToken("edge/dev1", "tok");
    await env.server.addDevice("edge/dev1", "tls/dev1");
    const dialer = (withCert: boolean) =>
      new MqttLinkDialer({
        url,
        ca,
        ...(withCert ? devicePair : {}),
        servername: "localhost",
        device: "edge/dev1",
        messageNamespace: "tls/dev1",
        token: "tok",
        dialTimeoutMs: 5_000,
      });
    // Without a client certificate the broker does not let the device in.
    await assert.rejects(dialer(false).dial(AbortSignal.timeout(10_000)), UnavailableError);
    const device = await dialer(true).dial(AbortSignal.timeout(10_000));
    const server = await env.nthLink(0);
    const up = collect(server);
    await device.send(enc("over tls"));
    await waitFor("the frame", () => up.length === 1);
    assert.equal(dec(up[0]!), "over tls");
    device.close();
  } finally {
    await env.stop();
  }
});
