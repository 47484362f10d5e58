/**
 * The MQTT fixture keeps the promises of {@link TransportHandle}, against a
 * real mosquitto: dials, restart, malformed frames, abrupt disconnects.
 */
import assert from "node:assert/strict";
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { StaticAuthenticator } from "@aranya/aranya/connectivity/testing/static_authenticator";
import { decodeMsg } from "@aranya/common/envelope";
import type { Link } from "@aranya/common/link";
import type { TransportHandle } from "./fixture.ts";
import { mqttFixture } from "./mqtt_fixture.ts";

/** Starts the fixture; `strict` links close on frames that are not Msgs (a stand-in session layer). */
async function start(strict: boolean): Promise<{
  handle: TransportHandle;
  auth: StaticAuthenticator;
  registry: MemoryLinkRegistry;
  links: Link[];
}> {
  const auth = new StaticAuthenticator();
  const registry = new MemoryLinkRegistry();
  const links: Link[] = [];
  const handle = await mqttFixture.start({
    authenticator: auth,
    registry,
    onLink: (link) => {
      links.push(link);
      link.start((frame) => {
        if (!strict) return;
        try {
          decodeMsg(frame);
        } catch {
          link.close("malformed frame");
        }
      });
    },
  });
  return { handle, auth, registry, links };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("the mqtt fixture dials, survives a broker restart and dials again", async () => {
  const { handle, auth, registry, links } = await start(false);
  try {
    assert.equal(mqttFixture.name, "mqtt");
    assert.equal(mqttFixture.maxFrameSize, 128 * 1024);
    auth.setToken("edge/dev1", "tok");
    const dialer = handle.dialer("edge/dev1", "tok");
    assert.equal(dialer.transport, "mqtt");
    const device = await dialer.dial(AbortSignal.timeout(10_000));
    await waitFor("aranya's link", () => links.length === 1);
    assert.equal(registry.get("edge/dev1"), links[0]);

    await handle.restart();
    assert.ok(["error", "remote"].includes((await links[0]!.closed).by));
    assert.equal((await device.closed).by, "error");

    const again = await dialer.dial(AbortSignal.timeout(10_000));
    await waitFor("the new link", () => links.length === 2);
    assert.equal(links[1]!.device, "edge/dev1");
    again.close();
  } finally {
    await handle.stop();
    await handle.stop(); // idempotent
  }
});

Deno.test("sendMalformed resolves when aranya closes the link, rejects when it does not", async () => {
  const strict = await start(true);
  try {
    strict.auth.setToken("edge/dev1", "tok");
    await strict.handle.sendMalformed("edge/dev1", "tok", new Uint8Array([0xff, 0xff, 0xff]));
    assert.equal((await strict.links[0]!.closed).by, "local");
    // Oversized bytes close the link below any session layer.
    await strict.handle.sendMalformed("edge/dev1", "tok", new Uint8Array(200 * 1024));
    assert.equal((await strict.links[1]!.closed).by, "error");
  } finally {
    await strict.handle.stop();
  }
  const lax = await start(false);
  try {
    lax.auth.setToken("edge/dev1", "tok");
    await assert.rejects(
      lax.handle.sendMalformed("edge/dev1", "tok", new Uint8Array([0xff, 0xff, 0xff])),
      /kept the MQTT link of device "edge\/dev1" open/,
    );
  } finally {
    await lax.handle.stop();
  }
});

Deno.test("abrupt disconnects leave the server serving", async () => {
  const { handle, auth, links } = await start(false);
  try {
    await handle.abruptDisconnects(20);
    assert.equal(links.length, 0, "no abrupt client was accepted");
    auth.setToken("edge/dev1", "tok");
    const device = await handle.dialer("edge/dev1", "tok").dial(AbortSignal.timeout(10_000));
    await waitFor("aranya's link", () => links.length === 1);
    const got: Uint8Array[] = [];
    device.start((f) => got.push(f));
    await links[0]!.send(new Uint8Array([1, 2, 3]));
    await waitFor("a frame", () => got.length === 1);
    device.close();
  } finally {
    await handle.stop();
  }
});
