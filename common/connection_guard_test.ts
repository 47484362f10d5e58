import assert from "node:assert/strict";
import http from "node:http";
import https from "node:https";
import tls from "node:tls";
import { testTls } from "@aranya/e2e/link/test_tls";
import { guardConnections } from "./connection_guard.ts";

Deno.test({
  name: "guardConnections: a per-address cap and a deadline for the first request",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = http.createServer((_req, res) => res.end("ok"));
    const guard = guardConnections(server, { perAddress: 3, firstRequestMs: 500 });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    const conns: Deno.Conn[] = [];
    try {
      // Four silent connections: the fourth is over the cap and closed at once.
      for (let i = 0; i < 4; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      const buf = new Uint8Array(64);
      assert.equal(await conns[3]!.read(buf), null, "over the cap: closed");
      assert.equal(guard.refused, 1);
      // A half-sent request does not hold its connection past the deadline.
      await conns[0]!.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n"));
      assert.equal(await conns[0]!.read(buf), null, "closed for not finishing its request");
      // A complete request is served and its connection kept.
      const ok = await fetch(`http://127.0.0.1:${port}/`);
      assert.equal(await ok.text(), "ok");
      assert.ok(guard.timedOut >= 1);
      // Connections past their first request do not count: more than the cap of them stay open
      // (a fleet behind one NAT or Ingress), and the cap still applies to silent ones.
      const served: Deno.Conn[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        served.push(c);
        conns.push(c);
        await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        const n = await c.read(buf);
        assert.ok(n && /200 OK/.test(new TextDecoder().decode(buf.subarray(0, n))));
      }
      const refusedBefore = guard.refused;
      for (let i = 0; i < 3; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      const over = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(over);
      assert.equal(await over.read(buf), null, "silent ones are still capped");
      assert.equal(guard.refused, refusedBefore + 1);
      for (const c of served) {
        await c.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert.ok(await c.read(buf), "a served connection is still open");
      }
    } finally {
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await new Promise((r) => server.close(r));
    }
  },
});

Deno.test({
  name: "guardConnections on TLS: a served connection outlives the deadline; a silent one does not",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const t = await testTls();
    const server = https.createServer(
      { cert: t.cert, key: t.key, handshakeTimeout: 500 },
      (_req, res) => res.end("ok"),
    );
    const guard = guardConnections(server, { firstRequestMs: 500, tls: true });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    try {
      // A kept-alive TLS connection that sent its request stays open past the deadline.
      const socket = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      await new Promise((r) => socket.once("secureConnect", r));
      const got: string[] = [];
      socket.on("data", (d) => got.push(String(d)));
      socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await new Promise((r) => setTimeout(r, 1200));
      assert.match(got.join(""), /200 OK/);
      assert.equal(socket.destroyed, false, "served: not closed by the deadline");
      socket.destroy();
      // A connection that never finishes its handshake is closed by the handshake timeout.
      const raw = await Deno.connect({ hostname: "127.0.0.1", port });
      await raw.write(new Uint8Array([0x16, 3, 1]));
      assert.equal(await raw.read(new Uint8Array(8)), null);
      raw.close();
      // One that finishes its handshake but sends nothing is closed by the guard.
      const idle = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      await new Promise((r) => idle.once("secureConnect", r));
      await new Promise((r) => idle.once("close", r));
      assert.ok(guard.timedOut >= 1);
    } finally {
      await new Promise((r) => server.close(r));
    }
  },
});
