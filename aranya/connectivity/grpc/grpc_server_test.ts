/**
 * The gRPC server layer on real sockets: message framing, limits, status
 * trailers, connection handling and shutdown, observed with a raw HTTP/2
 * client (every frame recorded) and with a stock grpc-js client.
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import {
  encodeFrame,
  Flag,
  FrameType,
  grpcFrame,
  type H2Frame,
  RawH2Client,
} from "@aranya/e2e/link/h2_raw_client";
import { makeTestCerts, type TestCerts } from "@aranya/e2e/link/test_certs";
import {
  type CallCloseInfo,
  encodeGrpcMessage,
  GrpcMessageReader,
  GrpcServer,
  type GrpcServerCall,
  type GrpcServerOptions,
  GrpcStatus,
} from "./grpc_server.ts";

const PATH = "/test.Echo/Stream";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** An echo server: every call is accepted and each message is sent back. */
async function startEcho(
  opts: Partial<GrpcServerOptions> = {},
  onCall?: (call: GrpcServerCall) => void,
) {
  const closes: CallCloseInfo[] = [];
  const calls: GrpcServerCall[] = [];
  const server = new GrpcServer({
    hostname: "127.0.0.1",
    port: 0,
    maxMessageSize: 1 << 20,
    ...opts,
  }, {
    [PATH]: (call) => {
      calls.push(call);
      if (onCall) return onCall(call);
      call.sendHeaders();
      call.start({
        onMessage: (m) => void call.write(m).catch(() => {}),
        onHalfClose: () => call.end(GrpcStatus.OK, "bye"),
        onClose: (info) => closes.push(info),
      });
    },
  });
  const port = await server.listen();
  return { server, port, closes, calls };
}

async function rawCall(port: number, metadata: Record<string, string> = {}, path = PATH) {
  const c = await RawH2Client.connect({ host: "127.0.0.1", port });
  c.start();
  c.grpcCall(1, path, metadata);
  return c;
}

const noGoaway = (c: RawH2Client) =>
  assert.ok(!c.frames.some((f) => f.type === FrameType.GOAWAY), "server sent GOAWAY");

const identity = (b: Buffer) => b;

function grpcClient(port: number) {
  return new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    "grpc.client_idle_timeout_ms": 1_000,
  });
}

Deno.test("GrpcMessageReader: messages split at every byte boundary come out whole", () => {
  const messages = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(300).fill(9)];
  const wire = Buffer.concat(messages.map((m) => grpcFrame(m)));
  for (const step of [1, 2, 3, 7, 64, wire.byteLength]) {
    const reader = new GrpcMessageReader(1000);
    const out: Uint8Array[] = [];
    for (let at = 0; at < wire.byteLength; at += step) {
      const r = reader.push(wire.subarray(at, at + step));
      assert.equal(r.error, undefined);
      out.push(...r.messages);
    }
    assert.deepEqual(out, messages, `chunks of ${step}`);
    assert.equal(reader.buffered, 0);
  }
});

Deno.test("GrpcMessageReader: copies messages out of the chunks", () => {
  const chunk = grpcFrame(new Uint8Array([5, 6]));
  const [m] = new GrpcMessageReader(10).push(chunk).messages;
  chunk.fill(0);
  assert.deepEqual(m, new Uint8Array([5, 6]));
});

Deno.test("GrpcMessageReader: an oversized message fails on its header, before its body", () => {
  const frame = grpcFrame(new Uint8Array(101));
  const r = new GrpcMessageReader(100).push(frame.subarray(0, 5));
  assert.equal(r.error?.code, GrpcStatus.RESOURCE_EXHAUSTED);
  assert.equal(r.error?.details, "Received a message of 101 bytes, above the limit of 100");
});

Deno.test("GrpcMessageReader: compressed or unknown flags are INTERNAL", () => {
  assert.equal(
    new GrpcMessageReader(10).push(grpcFrame(new Uint8Array(1), true)).error?.code,
    GrpcStatus.INTERNAL,
  );
  const bad = grpcFrame(new Uint8Array(1));
  bad[0] = 4;
  assert.equal(new GrpcMessageReader(10).push(bad).error?.code, GrpcStatus.INTERNAL);
});

Deno.test("GrpcMessageReader: a 16 MiB message in 16 KiB chunks reads in linear time", () => {
  const size = 16 << 20;
  const frame = grpcFrame(new Uint8Array(size).fill(3));
  const reader = new GrpcMessageReader(size);
  const started = performance.now();
  const out: Uint8Array[] = [];
  for (let at = 0; at < frame.byteLength; at += 16384) {
    out.push(...reader.push(frame.subarray(at, at + 16384)).messages);
  }
  const ms = performance.now() - started;
  assert.equal(out.length, 1);
  assert.equal(out[0]!.byteLength, size);
  // Concatenating on every chunk would copy about 8 TB here (hours); a linear reader takes well
  // under a second even on a loaded machine.
  assert.ok(ms < 30_000, `took ${ms} ms`);
});

Deno.test("encodeGrpcMessage percent-encodes non-printable bytes and %", () => {
  assert.equal(encodeGrpcMessage("ok 100%"), "ok 100%25");
  assert.equal(encodeGrpcMessage("héllo\n"), "h%C3%A9llo%0A");
  assert.equal(encodeGrpcMessage("plain text: (a/b) ~"), "plain text: (a/b) ~");
});

Deno.test("unknown method: Trailers-Only UNIMPLEMENTED, then the idle connection closes without GOAWAY", async () => {
  const { server, port } = await startEcho();
  const c = await rawCall(port, {}, "/nope.Service/Missing");
  try {
    const t = await c.trailers(1);
    assert.equal(t.headers?.[":status"], "200");
    assert.equal(t.headers?.["grpc-status"], String(GrpcStatus.UNIMPLEMENTED));
    assert.equal(t.headers?.["grpc-message"], 'Method "/nope.Service/Missing" is not implemented');
    assert.equal(c.streamFrames(1).length, 1, "a single HEADERS frame");
    await c.waitClosed();
    noGoaway(c);
  } finally {
    c.destroy();
    await server.shutdown();
  }
});

Deno.test("echo over a raw HTTP/2 client: messages in order, then status in trailers", async () => {
  const { server, port, closes } = await startEcho();
  const c = await rawCall(port);
  try {
    const sent = Array.from({ length: 50 }, (_, i) => new Uint8Array([i, i, i]));
    // All messages in one DATA frame, then half-close.
    c.data(1, Buffer.concat(sent.map((m) => grpcFrame(m))), true);
    const t = await c.trailers(1);
    assert.equal(t.headers?.["grpc-status"], "0");
    assert.equal(t.headers?.["grpc-message"], "bye");
    assert.deepEqual(c.grpcMessages(1), sent);
    const frames = c.streamFrames(1);
    assert.equal(frames[0]!.type, FrameType.HEADERS);
    assert.equal(frames.at(-1), t, "trailers come last");
    await c.waitClosed();
    noGoaway(c);
    assert.deepEqual(closes, [{ by: "local", code: 0, details: "bye" }]);
  } finally {
    c.destroy();
    await server.shutdown();
  }
});

Deno.test("an oversized message ends only its call with RESOURCE_EXHAUSTED", async () => {
  const { server, port, closes } = await startEcho({ maxMessageSize: 1000 });
  const c = await rawCall(port);
  const other = await rawCall(port);
  try {
    c.data(1, grpcFrame(new Uint8Array(1001)));
    const t = await c.trailers(1);
    assert.equal(t.headers?.["grpc-status"], String(GrpcStatus.RESOURCE_EXHAUSTED));
    assert.equal(
      decodeURIComponent(t.headers?.["grpc-message"] ?? ""),
      "Received a message of 1001 bytes, above the limit of 1000",
    );
    assert.equal(closes[0]?.code, GrpcStatus.RESOURCE_EXHAUSTED);
    // The other connection still works.
    other.data(1, grpcFrame(new Uint8Array([42])));
    await other.waitFor((f) => f.streamId === 1 && f.type === FrameType.DATA);
    assert.deepEqual(other.grpcMessages(1), [new Uint8Array([42])]);
  } finally {
    c.destroy();
    other.destroy();
    await server.shutdown();
  }
});

Deno.test("compression is refused: grpc-encoding gzip -> UNIMPLEMENTED, compressed flag -> INTERNAL", async () => {
  const { server, port } = await startEcho();
  const gz = await rawCall(port, { "grpc-encoding": "gzip" });
  const flagged = await rawCall(port);
  try {
    const t1 = await gz.trailers(1);
    assert.equal(t1.headers?.["grpc-status"], String(GrpcStatus.UNIMPLEMENTED));
    assert.equal(t1.headers?.["grpc-accept-encoding"], "identity");
    flagged.data(1, grpcFrame(new Uint8Array([1]), true));
    const t2 = await flagged.trailers(1);
    assert.equal(t2.headers?.["grpc-status"], String(GrpcStatus.INTERNAL));
  } finally {
    gz.destroy();
    flagged.destroy();
    await server.shutdown();
  }
});

Deno.test("per-connection call cap: advertised in SETTINGS, excess calls refused (REFUSED_STREAM)", async () => {
  const { server, port } = await startEcho({ maxCallsPerConnection: 2 });
  const c = await rawCall(port);
  try {
    const settings = await c.waitFor((f) => f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK));
    const values = new Map<number, number>();
    const v = new DataView(settings.payload.buffer);
    for (let at = 0; at < settings.payload.byteLength; at += 6) {
      values.set(v.getUint16(at), v.getUint32(at + 2));
    }
    assert.equal(values.get(0x3), 2, "SETTINGS_MAX_CONCURRENT_STREAMS");
    c.grpcCall(3, PATH);
    c.grpcCall(5, PATH);
    const rst = await c.waitFor((f) => f.streamId === 5 && f.type === FrameType.RST_STREAM);
    assert.equal(new DataView(rst.payload.buffer).getUint32(0), 7, "REFUSED_STREAM");
    assert.equal(server.callCount, 2);
    assert.ok(!c.frames.some((f) => f.type === FrameType.RST_STREAM && f.streamId !== 5));
  } finally {
    c.destroy();
    await server.shutdown();
  }
});

Deno.test("ended calls the client never closes cannot pile up on a connection", async () => {
  const { server, port } = await startEcho({ maxCallsPerConnection: 2 });
  const c = await rawCall(port); // stream 1 stays open, so the connection does too
  try {
    // Each call to an unknown method is ended by the server at once; the
    // client never closes its side of them.
    const ids = Array.from({ length: 12 }, (_, i) => 3 + 2 * i);
    for (const id of ids) c.grpcCall(id, "/nope.Service/Missing");
    await c.waitFor((f) => f.streamId === ids.at(-1));
    const refused = ids.filter((id) =>
      c.frames.some((f) => f.streamId === id && f.type === FrameType.RST_STREAM)
    );
    const answered = ids.filter((id) =>
      c.frames.some((f) => f.streamId === id && f.type === FrameType.HEADERS)
    );
    assert.equal(answered.length + refused.length, ids.length);
    assert.ok(answered.length >= 6 && answered.length <= 8, `answered ${answered.length}`);
    // Stream 1 still works.
    c.data(1, grpcFrame(new Uint8Array([1])));
    await c.waitFor((f) => f.streamId === 1 && f.type === FrameType.DATA);
  } finally {
    c.destroy();
    await server.shutdown();
  }
});

Deno.test("write() applies backpressure until the client opens its window", async () => {
  let call!: GrpcServerCall;
  const accepted = Promise.withResolvers<void>();
  const { server, port } = await startEcho({}, (c) => {
    call = c;
    c.sendHeaders();
    c.start({ onMessage: () => {}, onHalfClose: () => {}, onClose: () => {} });
    accepted.resolve();
  });
  const c = await RawH2Client.connect({ host: "127.0.0.1", port });
  try {
    c.start(false); // 65535-byte windows
    c.grpcCall(1, PATH);
    await accepted.promise;
    let firstDone = false;
    let secondDone = false;
    const first = call.write(new Uint8Array(60_000)).then(() => firstDone = true);
    const second = call.write(new Uint8Array(60_000)).then(() => secondDone = true);
    await first;
    await sleep(200);
    assert.ok(firstDone);
    assert.equal(secondDone, false, "the second write waits for flow control");
    c.windowUpdate(0, 1 << 20);
    c.windowUpdate(1, 1 << 20);
    await second;
    await c.waitFor(() => c.grpcMessages(1).length === 2);
    assert.deepEqual(c.grpcMessages(1).map((m) => m.byteLength), [60_000, 60_000]);
  } finally {
    c.destroy();
    await server.shutdown();
  }
});

Deno.test("shutdown: trailers with UNAVAILABLE after the messages, then TCP close, never GOAWAY", async () => {
  const { server, port, closes } = await startEcho();
  const clients = await Promise.all([rawCall(port), rawCall(port), rawCall(port)]);
  try {
    for (const c of clients) c.data(1, grpcFrame(new Uint8Array([7])));
    await Promise.all(clients.map((c) => c.waitFor((f) => f.type === FrameType.DATA)));
    await server.shutdown("going away");
    for (const c of clients) {
      const t = await c.trailers(1);
      assert.equal(t.headers?.["grpc-status"], String(GrpcStatus.UNAVAILABLE));
      assert.equal(t.headers?.["grpc-message"], "going away");
      assert.deepEqual(c.grpcMessages(1), [new Uint8Array([7])]);
      await c.waitClosed();
      noGoaway(c);
    }
    assert.deepEqual(closes.map((i) => [i.by, i.code]), [
      ["local", 14],
      ["local", 14],
      ["local", 14],
    ]);
    assert.equal(server.connectionCount, 0);
    // The port no longer accepts connections.
    await assert.rejects(RawH2Client.connect({ host: "127.0.0.1", port }));
  } finally {
    for (const c of clients) c.destroy();
    await server.shutdown();
  }
});

Deno.test("shutdown reaches a stock grpc-js client as status 14 with the message", async () => {
  const { server, port } = await startEcho();
  const client = grpcClient(port);
  try {
    const call = client.makeBidiStreamRequest<Buffer, Buffer>(PATH, identity, identity);
    call.on("error", () => {});
    const echoed = new Promise((resolve) => call.once("data", resolve));
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.write(Buffer.from("hi"));
    assert.equal(String(await echoed), "hi");
    await server.shutdown("aranya restarts ✓");
    const s = await status;
    assert.equal(s.code, grpc.status.UNAVAILABLE);
    assert.equal(s.details, "aranya restarts ✓");
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("a client's RST_STREAM cancels the call (remote), and the connection closes", async () => {
  const { server, port, closes } = await startEcho();
  const c = await rawCall(port);
  try {
    c.data(1, grpcFrame(new Uint8Array([1])));
    await c.waitFor((f) => f.type === FrameType.DATA);
    c.rst(1, 8);
    await c.waitClosed();
    assert.deepEqual(closes, [{
      by: "remote",
      code: GrpcStatus.CANCELLED,
      details: "Call canceled by the client",
    }]);
    noGoaway(c);
  } finally {
    c.destroy();
    await server.shutdown();
  }
});

Deno.test("a dropped TCP connection closes its calls with by=error", async () => {
  const { server, port, closes } = await startEcho();
  const c = await rawCall(port);
  try {
    c.data(1, grpcFrame(new Uint8Array([1])));
    await c.waitFor((f) => f.type === FrameType.DATA);
    c.destroy();
    for (let i = 0; i < 100 && closes.length === 0; i++) await sleep(10);
    assert.deepEqual(closes.map((i) => [i.by, i.code]), [["error", GrpcStatus.UNAVAILABLE]]);
    assert.equal(server.callCount, 0);
  } finally {
    await server.shutdown();
  }
});

Deno.test("a connection that opens no call is closed after the handshake timeout", async () => {
  const { server, port } = await startEcho({ handshakeTimeoutMs: 150 });
  const socket = net.connect({ host: "127.0.0.1", port });
  try {
    socket.on("error", () => {});
    const started = Date.now();
    await new Promise((resolve) => socket.once("close", resolve));
    const ms = Date.now() - started;
    // Closed (awaited above), and not before the timeout.
    assert.ok(ms >= 100, `closed after ${ms} ms`);
  } finally {
    socket.destroy();
    await server.shutdown();
  }
});

Deno.test("keepalive drops a connection whose peer stops answering PINGs, keeps one that answers", async () => {
  const { server, port } = await startEcho({ keepaliveMs: 100 });
  const live = await rawCall(port);
  const mute = await RawH2Client.connect({ host: "127.0.0.1", port, autoAck: false });
  try {
    mute.start();
    mute.grpcCall(1, PATH);
    await mute.waitClosed(3_000);
    assert.ok(mute.frames.some((f: H2Frame) => f.type === FrameType.PING), "server pinged");
    assert.equal(live.isClosed, false);
    assert.ok(live.frames.filter((f) => f.type === FrameType.PING).length >= 2);
  } finally {
    live.destroy();
    mute.destroy();
    await server.shutdown();
  }
});

Deno.test({
  name: "TLS: ALPN h2, verified client certificate CN reaches the call, none without a cert",
  async fn() {
    const certs: TestCerts = await makeTestCerts(
      `${new URL("../../../.cache/test-grpc", import.meta.url).pathname}/server-tls`,
      ["ns/dev1"],
    );
    const seen: (string | undefined)[] = [];
    const { server, port } = await startEcho({
      tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca, requestCert: true },
    }, (call) => {
      seen.push(call.clientCertificateCN);
      call.end(GrpcStatus.OK);
    });
    try {
      for (const client of [certs.clients["ns/dev1"], undefined]) {
        const c = await RawH2Client.connect({
          host: "127.0.0.1",
          port,
          tls: { ca: certs.ca, servername: "localhost", cert: client?.cert, key: client?.key },
        });
        try {
          c.start();
          c.grpcCall(1, PATH);
          const t = await c.trailers(1);
          assert.equal(t.headers?.["grpc-status"], "0");
        } finally {
          c.destroy();
        }
      }
      assert.deepEqual(seen, ["ns/dev1", undefined]);
    } finally {
      await server.shutdown();
    }
  },
});

/** The error code of the first GOAWAY `c` receives. */
async function goawayCode(c: RawH2Client): Promise<number> {
  const f = await c.waitFor((f) => f.type === FrameType.GOAWAY);
  return new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(4);
}

Deno.test("a peer that breaks HTTP/2 gets GOAWAY with the error's code (RFC 9113 5.4.1)", async () => {
  const { server, port } = await startEcho();
  try {
    // A bad preface: PROTOCOL_ERROR (1).
    const bad = await RawH2Client.connect({ host: "127.0.0.1", port });
    bad.write(new TextEncoder().encode("PRI * HTTP/1.1\r\n\r\nXX\r\n\r\n"));
    assert.equal(await goawayCode(bad), 1);
    await bad.waitClosed();
    bad.destroy();
    // A frame longer than the server's SETTINGS_MAX_FRAME_SIZE (16384): FRAME_SIZE_ERROR (6).
    const big = await RawH2Client.connect({ host: "127.0.0.1", port });
    big.start();
    big.write(encodeFrame(FrameType.PING, 0, 0, new Uint8Array(20_000)));
    assert.equal(await goawayCode(big), 6);
    await big.waitClosed();
    big.destroy();
    // The server serves the next peer.
    const good = await rawCall(port);
    good.data(1, grpcFrame(new Uint8Array([7])), true);
    const t = await good.trailers(1);
    assert.equal(t.headers?.["grpc-status"], "0");
    good.destroy();
  } finally {
    await server.shutdown();
  }
});
