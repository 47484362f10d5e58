/**
 * The websocket listener's per-device keepalive: the interval reaches arhat's
 * dialer in the accept frame, and both ends keep to it; a link closed for the
 * peer's protocol error closes with code 1002. (Everything else about
 * the transport is in e2e/link/conformance_test.ts.)
 */
import assert from "node:assert/strict";
import { WebSocketLinkDialer } from "@aranya/arhat/connectivity/websocket/ws_link_dialer";
import { testTls } from "@aranya/e2e/link/test_tls";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import { WebSocketLinkServer } from "./ws_link_server.ts";
import { ProtocolError } from "@aranya/common/errors";
import type { Link } from "@aranya/common/link";

/** A listener with `tokens` (device -> token) over the test TLS pair; `onLink` sees each link. */
async function listen(
  tokens: Record<string, string>,
  onLink: (link: Link) => void,
  opts: { keepaliveMs?: number; keepaliveFor?: (device: string) => number | undefined } = {},
) {
  const tls = await testTls();
  const auth = new StaticAuthenticator();
  for (const [device, token] of Object.entries(tokens)) auth.setToken(device, token);
  const server = new WebSocketLinkServer({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: tls.cert, key: tls.key },
    authenticator: auth,
    registry: new MemoryLinkRegistry(),
    ...opts,
  });
  const ac = new AbortController();
  const run = server.run(ac.signal, onLink);
  await server.ready;
  return {
    tls,
    server,
    ac,
    stop: async () => {
      ac.abort();
      await run;
    },
  };
}

Deno.test({
  name: "a device's keepalive interval reaches the device and holds the link",
  // node:https and ws keep sockets and timers until the server stops; stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { tls, server, ac, stop } = await listen(
      { "ns/fast": "t1", "ns/plain": "t2" },
      () => {},
      {
        keepaliveMs: 120_000,
        keepaliveFor: (device) => device === "ns/fast" ? 1000 : undefined,
      },
    );
    const dial = (device: string, token: string) =>
      new WebSocketLinkDialer({
        url: `wss://localhost:${server.port}/v1/link`,
        device,
        token,
        tls: { ca: tls.ca },
        // What an old aranya would mean; the accept frame overrides it.
        keepaliveMs: 60_000,
      }).dial(ac.signal);
    const fast = await dial("ns/fast", "t1");
    const plain = await dial("ns/plain", "t2");
    try {
      const interval = (l: unknown) => (l as { keepaliveMs: number }).keepaliveMs;
      assert.equal(interval(fast), 1000, "the device's own interval");
      assert.equal(interval(plain), 120_000, "the listener's default");
      // The device closes the link after 2.5 s without a word from aranya: open after 4 s means
      // aranya kept sending at the device's interval (and got answers).
      let closed = false;
      fast.closed.then(() => closed = true);
      await new Promise((r) => setTimeout(r, 4000));
      assert.equal(closed, false);
    } finally {
      fast.close("done");
      plain.close("done");
      await stop();
    }
  },
});

Deno.test({
  name: "a link closed for a protocol error says so: close code 1002, by error on both ends",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const accepted = Promise.withResolvers<Link>();
    const { tls, server, ac, stop } = await listen({ "ns/dev": "t1" }, (l) => accepted.resolve(l));
    try {
      const device = await new WebSocketLinkDialer({
        url: `wss://localhost:${server.port}/v1/link`,
        device: "ns/dev",
        token: "t1",
        tls: { ca: tls.ca },
      }).dial(ac.signal);
      const link = await accepted.promise;
      // What the session layer does with a frame it cannot decode.
      link.close(new ProtocolError("malformed frame"));
      assert.deepEqual(await link.closed, { by: "error", reason: "malformed frame" });
      assert.deepEqual(await device.closed, { by: "error", reason: "code 1002 malformed frame" });
    } finally {
      await stop();
    }
  },
});
