/**
 * Network actions end within their timeout whatever the peer does: a server
 * that accepts and never answers, one that sends headers and stalls the body,
 * one that answers slowly; and an answer is read whole.
 */
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { HttpGetActionSchema } from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerRuntime } from "../runtime/runtime.ts";
import { runAction } from "./actions.ts";

/** A TCP server on loopback that runs `serve` for every connection. */
function server(serve: (conn: Deno.Conn) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      serve(conn).catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

const enc = new TextEncoder();
const target = { runtime: {} as ContainerRuntime, containerId: "c", address: "127.0.0.1" };
const httpGet = (port: number) => ({
  case: "httpGet" as const,
  value: create(HttpGetActionSchema, { path: "/index.html", port, scheme: "HTTP" }),
});

Deno.test("httpGet ends within its timeout: silent peer, stalled body, and a whole answer", async () => {
  const never = new Promise<void>(() => {});
  const silent = server(() => never);
  const stalled = server(async (conn) => {
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf"));
    await never;
  });
  const good = server(async (conn) => {
    await conn.read(new Uint8Array(4096));
    await conn.write(
      enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"),
    );
    conn.close();
  });
  try {
    for (const [name, s] of [["silent", silent], ["stalled", stalled]] as const) {
      const started = performance.now();
      const r = await runAction(target, httpGet(s.port), 300);
      const took = performance.now() - started;
      assert.equal(r.ok, false, name);
      assert.match(r.message, /timed out/i, name);
      // Ended (it did not hang on the peer), and by its timeout: the message says so.
      assert.ok(took < 30_000, `${name}: ended after ${took.toFixed(0)} ms`);
    }
    assert.deepEqual(await runAction(target, httpGet(good.port), 1000), { ok: true, message: "" });
  } finally {
    silent.close();
    stalled.close();
    good.close();
  }
});
