/**
 * The MQTT transport under the link conformance suite: a real mosquitto, one
 * {@link MqttLinkServer} on it, and {@link MqttLinkDialer}s as devices.
 *
 * - `dialer(device, token)` registers the device on the server under the
 *   message namespace `aranya-test/<device>` when it dials. Each dialer object
 *   has its own MQTT client id (stable across its dials, as an agent's is), so
 *   two dialers of one device meet aranya's "already connected" rule rather
 *   than the broker's session takeover.
 * - `restart()` stops mosquitto and starts it again on the same port; links
 *   close, and it resolves once aranya's client has reconnected.
 * - `sendMalformed` dials properly, publishes `bytes` on the device's
 *   `{ns}/msg` and waits for the device's link to close. The MQTT link does not
 *   decode frames: the link closes when the session layer above aranya's link
 *   closes it on a decode failure (aranya then publishes a `CMD_REJECT` that
 *   ends the device's link), or, for bytes above `maxFrameSize`, by
 *   `BaseLink.deliver` on its own.
 * - `abruptDisconnects(n)` opens n connections to the broker: half raw TCP
 *   connections that send a partial MQTT CONNECT and close (Deno cannot force
 *   a TCP reset), half MQTT clients that announce random devices (registered on
 *   the server, unknown to the authenticator) and then destroy their socket
 *   without DISCONNECT, so the broker publishes their wills.
 *
 * @module
 */
import {
  MQTT_DEFAULT_MAX_FRAME_SIZE,
  MqttLinkServer,
} from "@aranya/aranya/connectivity/mqtt/mqtt_link_server";
import { MqttLinkDialer } from "@aranya/arhat/connectivity/mqtt/mqtt_link_dialer";
import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import { stateFrame, StateKind } from "@aranya/common/envelope";
import type { Link, LinkDialer } from "@aranya/common/link";
import { type Broker, startMosquitto } from "../services/mosquitto.ts";
import type { FixtureStartOptions, TransportFixture, TransportHandle } from "./fixture.ts";

/** The message namespace the fixture gives `device`. */
export function fixtureNamespace(device: string): string {
  return `aranya-test/${device}`;
}

const MALFORMED_WAIT_MS = 5_000;

/** {@link TransportFixture} for MQTT. */
export const mqttFixture: TransportFixture = {
  name: "mqtt",
  maxFrameSize: MQTT_DEFAULT_MAX_FRAME_SIZE,
  start: startMqttFixture,
};

async function startMqttFixture(opts: FixtureStartOptions): Promise<TransportHandle> {
  let broker: Broker = await startMosquitto();
  const port = Number(broker.address.split(":")[1]);
  const url = `mqtt://${broker.address}`;
  const server = new MqttLinkServer({
    url,
    keys: opts.authenticator,
    registry: opts.registry,
    reconnectPeriodMs: 200,
    // The broker's persistence outlives the fixture: let the session expire soon.
    sessionExpirySeconds: 30,
  });
  const ac = new AbortController();
  const running = server.run(ac.signal, opts.onLink);
  running.catch(() => {});
  try {
    await server.ready;
  } catch (err) {
    ac.abort();
    await broker.stop();
    throw err;
  }
  let dialers = 0;
  let stopped = false;

  const newDialer = (device: string, token: string, maxFrameSize?: number) => {
    const n = ++dialers;
    const dialer = new MqttLinkDialer({
      url,
      device,
      messageNamespace: fixtureNamespace(device),
      token,
      clientId: `arhat-fixture-${n}`,
      dialTimeoutMs: 10_000,
      maxFrameSize,
    });
    return {
      transport: dialer.transport,
      async dial(signal: AbortSignal): Promise<Link> {
        await server.addDevice(device, fixtureNamespace(device));
        return dialer.dial(signal);
      },
    } satisfies LinkDialer;
  };

  return {
    dialer: (device, token) => newDialer(device, token),

    async restart() {
      await broker.stop();
      broker = await startMosquitto({ port, instance: broker.instance });
      const deadline = Date.now() + 15_000;
      while (!server.connected) {
        if (Date.now() > deadline) {
          throw new Error(`aranya did not reconnect to the broker at "${url}" within 15 s`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },

    async sendMalformed(device, token, bytes) {
      // The device's own limit must not stop the bytes from leaving.
      const limit = Math.max(MQTT_DEFAULT_MAX_FRAME_SIZE, bytes.byteLength);
      const link = await newDialer(device, token, limit).dial(AbortSignal.timeout(15_000));
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        link.start(() => {});
        await link.send(bytes);
        await Promise.race([
          link.closed,
          new Promise((_, reject) => {
            timer = setTimeout(
              () =>
                reject(
                  new Error(
                    `aranya kept the MQTT link of device "${device}" open ${MALFORMED_WAIT_MS} ms after a malformed frame of ${bytes.byteLength} bytes`,
                  ),
                ),
              MALFORMED_WAIT_MS,
            );
          }),
        ]);
      } finally {
        clearTimeout(timer);
        link.close();
      }
    },

    async abruptDisconnects(n) {
      const raw = Math.ceil(n / 2);
      const tasks: (() => Promise<void>)[] = [];
      for (let i = 0; i < raw; i++) tasks.push(() => partialConnect(port));
      for (let i = raw; i < n; i++) tasks.push(() => announceAndVanish(server, url));
      // Ten at a time: the machine has two cores.
      for (let i = 0; i < tasks.length; i += 10) {
        await Promise.all(tasks.slice(i, i + 10).map((t) => t()));
      }
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      ac.abort();
      await running.catch(() => {});
      await broker.stop();
    },
  };
}

/** A TCP connection that sends the first bytes of an MQTT CONNECT and closes. */
async function partialConnect(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    // CONNECT, remaining length 16, then "\0\4MQTT\5" and nothing more.
    await conn.write(new Uint8Array([0x10, 16, 0, 4, 0x4d, 0x51, 0x54, 0x54, 5]));
  } finally {
    conn.close();
  }
}

/**
 * An MQTT client that announces a random device (registered on the server,
 * unknown to the authenticator) and destroys its socket without DISCONNECT.
 */
async function announceAndVanish(server: MqttLinkServer, url: string): Promise<void> {
  const device = `abrupt/dev-${crypto.randomUUID().slice(0, 8)}`;
  const ns = fixtureNamespace(device);
  await server.addDevice(device, ns);
  const connectionId = crypto.randomUUID();
  const client = await mqtt.connectAsync(url, {
    clientId: `abrupt-${connectionId.slice(0, 8)}`,
    protocolVersion: 5,
    reconnectPeriod: 0,
    will: {
      topic: `${ns}/status`,
      payload: Buffer.from(stateFrame({ kind: StateKind.OFFLINE, device, connectionId })),
      qos: 1,
      retain: false,
    },
  });
  client.on("error", () => {});
  try {
    const online = stateFrame({
      kind: StateKind.ONLINE,
      device,
      connectionId,
      nonce: crypto.getRandomValues(new Uint8Array(16)),
      mac: crypto.getRandomValues(new Uint8Array(32)),
    });
    await client.publishAsync(`${ns}/status`, Buffer.from(online), { qos: 1 });
  } finally {
    client.stream.destroy();
    await client.endAsync(true).catch(() => {});
  }
  // Give aranya a moment to handle the announcement and the will, then forget the device.
  await new Promise((r) => setTimeout(r, 200));
  server.removeDevice(device);
}
