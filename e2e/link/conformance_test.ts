/**
 * One conformance suite for the Link behaviour, run against every transport
 * over real sockets (mqtt through a real mosquitto). The session layer from
 * common/session runs on top, with the echo dispatcher on the device side.
 */
import assert from "node:assert/strict";
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { StaticAuthenticator } from "@aranya/aranya/connectivity/testing/static_authenticator";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import {
  AlreadyExistsError,
  CanceledError,
  ExitCodeError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { Link } from "@aranya/common/link";
import { SessionClient } from "@aranya/common/session/session_client";
import { SessionServer } from "@aranya/common/session/session_server";
import { echoDispatcher } from "@aranya/common/session/testing/echo_dispatcher";
import type { TransportFixture } from "./fixture.ts";
import { FIXTURES } from "./fixtures.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function waitFor<T>(what: string, fn: () => T | undefined, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

function suite(fx: TransportFixture) {
  Deno.test({
    name: `link conformance: ${fx.name}`,
    // mqtt.js and node:https keep timers and sockets that outlive single steps;
    // every server and client is stopped in the finally block below.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (t) => {
      const auth = new StaticAuthenticator();
      const registry = new MemoryLinkRegistry();
      const accepted: { device: string; client: SessionClient }[] = [];
      const onLink = (link: Link) => {
        const client = new SessionClient(link, { unaryTimeoutMs: 20_000 });
        client.start();
        accepted.push({ device: link.device, client });
      };
      const handle = await fx.start({ authenticator: auth, registry, onLink });
      const devices: Link[] = [];
      const connect = async (device: string, token: string) => {
        const before = accepted.length;
        const link = await handle.dialer(device, token).dial(AbortSignal.timeout(15_000));
        const { dispatcher, seen } = echoDispatcher();
        const server = new SessionServer(link, { dispatcher });
        server.start();
        devices.push(link);
        const client = await waitFor(
          `aranya to accept ${device}`,
          () => accepted.slice(before).find((x) => x.device === device)?.client,
        );
        return { link, server, seen, client };
      };
      try {
        auth.setToken("edge/dev-a", "token-a");
        auth.setToken("edge/dev-b", "token-b");
        let a = await connect("edge/dev-a", "token-a");

        await t.step("ordering: a stream of 1000 writes comes back in order", async () => {
          let out = "";
          const s = a.client.stream(CmdKind.CMD_EXEC, new Uint8Array([0]), {
            onStdout: (d) => out += dec(d),
          });
          await s.ready;
          let want = "";
          for (let i = 0; i < 1000; i++) {
            const piece = `${i},`;
            want += piece;
            await s.write(enc(piece));
          }
          await s.closeWrite();
          assert.deepEqual(await s.done, { exitCode: 0 });
          assert.equal(out, want);
        });

        await t.step("a 10 MB payload is chunked and reassembled byte-identical", async () => {
          const big = new Uint8Array(10 * 1024 * 1024);
          for (let off = 0; off < big.length; off += 65536) {
            crypto.getRandomValues(big.subarray(off, off + 65536));
          }
          const r = await a.client.request(CmdKind.CMD_NODE_INFO_GET, big, { timeoutMs: 60_000 });
          assert.equal(r.kind, MsgKind.MSG_NODE_STATUS);
          assert.equal(r.payload.byteLength, big.byteLength);
          assert.deepEqual(r.payload, big);
        });

        await t.step("1000 concurrent sessions", async () => {
          const results = await Promise.all(
            Array.from(
              { length: 1000 },
              (_, i) =>
                a.client.request(CmdKind.CMD_NODE_INFO_GET, enc(`req-${i}`), { timeoutMs: 60_000 }),
            ),
          );
          results.forEach((r, i) => assert.equal(dec(r.payload), `req-${i}`));
          assert.equal(a.client.activeSessions, 0);
        });

        await t.step("unary timeout fails the request and closes the device session", async () => {
          const before = a.seen.aborted.size;
          await assert.rejects(
            a.client.request(CmdKind.CMD_POD_LIST, new Uint8Array(), { timeoutMs: 300 }),
            TimeoutError,
          );
          await waitFor(
            "the device handler to be aborted",
            () => a.seen.aborted.size > before ? true : undefined,
          );
        });

        await t.step("cancel from aranya and from the device", async () => {
          const s = a.client.stream(CmdKind.CMD_LOGS, new Uint8Array());
          await s.ready;
          s.cancel();
          await assert.rejects(s.done, CanceledError);
          await waitFor(
            "the device to see the cancel",
            () => a.seen.aborted.has(s.sid) ? true : undefined,
          );
          const d = a.client.stream(CmdKind.CMD_LOGS, enc("device-cancel"));
          await assert.rejects(d.done, CanceledError);
          const e = a.client.stream(CmdKind.CMD_EXEC, new Uint8Array([7]));
          await e.closeWrite();
          await assert.rejects(e.done, (err) => err instanceof ExitCodeError && err.exitCode === 7);
        });

        await t.step("bad credentials are rejected and nothing is applied", async () => {
          const n = accepted.length;
          await assert.rejects(
            handle.dialer("edge/dev-b", "wrong-token").dial(AbortSignal.timeout(15_000)),
            UnauthenticatedError,
          );
          await assert.rejects(
            handle.dialer("edge/unknown", "token-a").dial(AbortSignal.timeout(15_000)),
            UnauthenticatedError,
          );
          assert.equal(accepted.length, n);
          assert.equal(registry.get("edge/dev-b"), undefined);
        });

        await t.step("a second connection claiming a connected device is rejected", async () => {
          const n = accepted.length;
          await assert.rejects(
            handle.dialer("edge/dev-a", "token-a").dial(AbortSignal.timeout(15_000)),
            AlreadyExistsError,
          );
          assert.equal(accepted.length, n);
          const r = await a.client.request(CmdKind.CMD_NODE_INFO_GET, enc("still-here"));
          assert.equal(dec(r.payload), "still-here");
        });

        await t.step("malformed and oversized frames close that connection only", async () => {
          const b = await connect("edge/dev-b", "token-b");
          auth.setToken("edge/dev-c", "token-c");
          await handle.sendMalformed(
            "edge/dev-c",
            "token-c",
            new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]),
          );
          await handle.sendMalformed(
            "edge/dev-c",
            "token-c",
            new Uint8Array(fx.maxFrameSize + 1024),
          );
          for (const dev of [a, b]) {
            const r = await dev.client.request(CmdKind.CMD_NODE_INFO_GET, enc("alive"));
            assert.equal(dec(r.payload), "alive");
          }
          b.link.close();
        });

        await t.step("1000 abrupt disconnects leave the server running", async () => {
          await handle.abruptDisconnects(1000);
          const r = await a.client.request(CmdKind.CMD_NODE_INFO_GET, enc("after-abuse"));
          assert.equal(dec(r.payload), "after-abuse");
          const c = await connect("edge/dev-b", "token-b");
          const r2 = await c.client.request(CmdKind.CMD_NODE_INFO_GET, enc("new-link"));
          assert.equal(dec(r2.payload), "new-link");
          c.link.close();
        });

        await t.step("restart: sessions fail cleanly, then the link works again", async () => {
          const pending = a.client.request(CmdKind.CMD_POD_LIST, new Uint8Array(), {
            timeoutMs: 60_000,
          });
          const pendingOutcome = pending.then(() => undefined, (e) => e);
          const stream = a.client.stream(CmdKind.CMD_LOGS, new Uint8Array());
          await stream.ready;
          await handle.restart();
          assert.ok(await pendingOutcome instanceof UnavailableError);
          await assert.rejects(stream.done, UnavailableError);
          await a.link.closed;
          // The device reconnects (arhat's reconnect loop does this with back-off).
          a = await waitForReconnect(() => connect("edge/dev-a", "token-a"));
          const r = await a.client.request(CmdKind.CMD_NODE_INFO_GET, enc("reconnected"));
          assert.equal(dec(r.payload), "reconnected");
        });
      } finally {
        for (const l of devices) l.close();
        await handle.stop();
      }
    },
  });
}

async function waitForReconnect<T>(dial: () => Promise<T>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await dial();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

for (const fx of FIXTURES) suite(fx);
