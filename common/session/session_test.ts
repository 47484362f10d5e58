/**
 * Unit tests of the session layer over an in-memory link pair. The same
 * behaviour is checked over every real transport by e2e/link/conformance_test.ts.
 */
import assert from "node:assert/strict";
import { CmdKind, MsgKind } from "../envelope.ts";
import {
  CanceledError,
  ExitCodeError,
  NotFoundError,
  NotSupportedError,
  TimeoutError,
  UnavailableError,
} from "../errors.ts";
import { memoryLinkPair } from "../testing/memory_link.ts";
import { SessionClient } from "./session_client.ts";
import { SessionServer } from "./session_server.ts";
import { echoDispatcher } from "./testing/echo_dispatcher.ts";

function setup(maxFrameSize = 1024) {
  const [cloud, device] = memoryLinkPair("ns/dev", maxFrameSize);
  const client = new SessionClient(cloud, { unaryTimeoutMs: 2000 });
  const { dispatcher, seen } = echoDispatcher();
  const server = new SessionServer(device, { dispatcher });
  client.start();
  server.start();
  return { cloud, device, client, server, seen };
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("unary request and chunked reply", async () => {
  const { client, cloud } = setup(256);
  const big = crypto.getRandomValues(new Uint8Array(50_000));
  const r = await client.request(CmdKind.CMD_NODE_INFO_GET, big);
  assert.equal(r.kind, MsgKind.MSG_NODE_STATUS);
  assert.deepEqual(r.payload, big);
  assert.equal(client.activeSessions, 0);
  cloud.close();
});

Deno.test("device errors map to domain errors", async () => {
  const { client, cloud } = setup();
  await assert.rejects(client.request(CmdKind.CMD_POD_ENSURE, new Uint8Array()), NotFoundError);
  await assert.rejects(
    client.request(CmdKind.CMD_IMAGE_ENSURE, new Uint8Array()),
    (e) => e instanceof NotSupportedError && /not supported/.test(e.message),
  );
  cloud.close();
});

Deno.test("unary timeout closes the session on the device", async () => {
  const { client, cloud, seen } = setup();
  await assert.rejects(
    client.request(CmdKind.CMD_POD_LIST, new Uint8Array(), { timeoutMs: 50 }),
    TimeoutError,
  );
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(seen.aborted.size, 1);
  cloud.close();
});

Deno.test("cancel from aranya aborts the device handler", async () => {
  const { client, cloud, seen } = setup();
  const ac = new AbortController();
  const p = client.request(CmdKind.CMD_POD_LIST, new Uint8Array(), { signal: ac.signal });
  await new Promise((r) => setTimeout(r, 10));
  ac.abort();
  await assert.rejects(p, CanceledError);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(seen.aborted.size, 1);
  cloud.close();
});

Deno.test("stream: stdin echoed, stderr, exit code", async () => {
  const { client, cloud, seen } = setup(128);
  let out = "";
  let err = "";
  const s = client.stream(CmdKind.CMD_EXEC, new Uint8Array([3]), {
    onStdout: (d) => out += dec(d),
    onStderr: (d) => err += dec(d),
  });
  await s.ready;
  await s.resize(80, 24);
  const text = "x".repeat(1000);
  await s.write(enc(text));
  await s.closeWrite();
  await assert.rejects(s.done, (e) => e instanceof ExitCodeError && e.exitCode === 3);
  assert.equal(out, text);
  assert.equal(err, "bye");
  assert.deepEqual(seen.resizes, [{ cols: 80, rows: 24 }]);
  cloud.close();
});

Deno.test("stream: cancel from either side", async () => {
  const { client, cloud, seen } = setup();
  const s = client.stream(CmdKind.CMD_LOGS, new Uint8Array());
  await s.ready;
  s.cancel();
  await assert.rejects(s.done, CanceledError);
  await new Promise((r) => setTimeout(r, 10));
  assert.ok(seen.aborted.has(s.sid));
  const d = client.stream(CmdKind.CMD_LOGS, enc("device-cancel"));
  await assert.rejects(
    d.done,
    (e) => e instanceof CanceledError && /device stopped/.test(e.message),
  );
  cloud.close();
});

Deno.test("link loss fails every session cleanly", async () => {
  const { client, device } = setup();
  const pending = Array.from(
    { length: 10 },
    () => client.request(CmdKind.CMD_POD_LIST, new Uint8Array()),
  );
  const s = client.stream(CmdKind.CMD_LOGS, new Uint8Array());
  await s.ready;
  device.close("gone");
  for (const p of pending) await assert.rejects(p, UnavailableError);
  await assert.rejects(s.done, UnavailableError);
  await assert.rejects(
    client.request(CmdKind.CMD_NODE_INFO_GET, new Uint8Array()),
    UnavailableError,
  );
});

Deno.test("unsolicited messages from the device, chunked", async () => {
  const { client, server, cloud } = setup(128);
  const got: Uint8Array[] = [];
  client.onUnsolicited((m) => {
    if (m.kind === MsgKind.MSG_POD_STATUS) got.push(m.payload);
  });
  const payload = crypto.getRandomValues(new Uint8Array(5000));
  await server.publish(MsgKind.MSG_POD_STATUS, payload);
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(got, [payload]);
  cloud.close();
});

Deno.test("unsolicited messages reach every handler; one that throws does not stop the others", async () => {
  const { client, server, cloud } = setup(128);
  const pods: number[] = [];
  const nodes: number[] = [];
  client.onUnsolicited(() => {
    throw new Error("a broken handler");
  });
  client.onUnsolicited((m) => {
    if (m.kind === MsgKind.MSG_POD_STATUS) pods.push(m.payload.byteLength);
  });
  const removeNodes = client.onUnsolicited((m) => {
    if (m.kind === MsgKind.MSG_NODE_STATUS) nodes.push(m.payload.byteLength);
  });
  await server.publish(MsgKind.MSG_POD_STATUS, new Uint8Array(300));
  await server.publish(MsgKind.MSG_NODE_STATUS, new Uint8Array(40));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual([pods, nodes], [[300], [40]]);
  removeNodes();
  await server.publish(MsgKind.MSG_NODE_STATUS, new Uint8Array(41));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(nodes, [40], "a removed handler gets nothing more");
  cloud.close();
});

Deno.test("onMessage counts whole messages by kind, not chunks", async () => {
  const [cloud, device] = memoryLinkPair("ns/dev", 128);
  const seen: string[] = [];
  const client = new SessionClient(cloud, {
    onMessage: (dir, kind) => seen.push(`${dir} ${kind}`),
  });
  const server = new SessionServer(device, { dispatcher: echoDispatcher().dispatcher });
  client.start();
  server.start();
  await client.request(CmdKind.CMD_NODE_INFO_GET, new Uint8Array(1000));
  await server.publish(MsgKind.MSG_POD_STATUS, new Uint8Array(500));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(seen, [
    "sent CMD_NODE_INFO_GET",
    "received MSG_NODE_STATUS",
    "received MSG_POD_STATUS",
  ]);
  cloud.close();
});

Deno.test("a malformed frame closes the link, not the process", async () => {
  const { cloud, device } = setup();
  await device.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]));
  const info = await cloud.closed;
  // The peer broke the protocol: closed by "error" (a ProtocolError), which the transports
  // say on the wire (gRPC INVALID_ARGUMENT, websocket 1002).
  assert.equal(info.by, "error");
  assert.match(info.reason, /malformed/);
});
