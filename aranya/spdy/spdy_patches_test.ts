/**
 * The effect of each spdy-transport patch, observed on the wire: a real
 * spdy-transport server connection on 127.0.0.1 and a raw HTTP/2 client that
 * records every frame.
 */
import assert from "node:assert/strict";
import net from "node:net";
import transport from "spdy-transport";
import { Flag, FrameType, H2Error, RawH2Client } from "@aranya/e2e/link/h2_raw_client";
import {
  applySpdyPatches,
  createSpdyConnection,
  endWithTrailers,
  openSpdySendWindow,
  type SpdyConnection,
  spdyPatchesApplied,
  type SpdyStream,
} from "./spdy_patches.ts";
import { readFrames, synStream } from "../kubelet/testing/raw_spdy.ts";
import { concatBytes } from "@aranya/common/bytes";

interface TestServer {
  port: number;
  streams: SpdyStream[];
  connections: SpdyConnection[];
  /** Errors emitted by streams. */
  streamErrors: Error[];
  nextStream(): Promise<SpdyStream>;
  close(): Promise<void>;
}

async function startServer(): Promise<TestServer> {
  const streams: SpdyStream[] = [];
  const connections: SpdyConnection[] = [];
  const streamErrors: Error[] = [];
  const sockets = new Set<net.Socket>();
  let waiting: ((s: SpdyStream) => void) | undefined;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.setNoDelay(true);
    const conn = createSpdyConnection(socket, { protocol: "http2", isServer: true });
    connections.push(conn);
    conn.on("error", () => {});
    conn.on("stream", (s) => {
      s.on("error", (e) => streamErrors.push(e));
      streams.push(s);
      waiting?.(s);
      waiting = undefined;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    streams,
    connections,
    streamErrors,
    nextStream: () => new Promise((resolve) => waiting = resolve),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function openCall(server: TestServer, openWindows = true) {
  const client = await RawH2Client.connect({ host: "127.0.0.1", port: server.port });
  client.start(openWindows);
  const next = server.nextStream();
  client.grpcCall(1, "/test.Service/Call");
  const stream = await next;
  return { client, stream };
}

const grpcMessage = (n: number) => {
  const out = new Uint8Array(5 + n);
  new DataView(out.buffer).setUint32(1, n);
  out.fill(7, 5);
  return out;
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("applySpdyPatches is idempotent", () => {
  applySpdyPatches();
  // deno-lint-ignore no-explicit-any
  const sp: any = transport.Stream.prototype;
  // deno-lint-ignore no-explicit-any
  const cp: any = transport.Connection.prototype;
  const before = [sp._final, sp._onFinish, sp._handleRST, sp._destroy, cp._handleGoaway];
  applySpdyPatches();
  applySpdyPatches();
  assert.ok(spdyPatchesApplied());
  assert.deepEqual([sp._final, sp._onFinish, sp._handleRST, sp._destroy, cp._handleGoaway], before);
});

Deno.test("P1: trailers follow every DATA frame, even when flow control holds DATA back", async () => {
  const server = await startServer();
  // The client keeps the default 65535-byte windows, so 200 KB must wait for
  // WINDOW_UPDATEs while the trailers are already queued.
  const { client, stream } = await openCall(server, false);
  try {
    stream.respond(200, { "content-type": "application/grpc" });
    const total = 4 * (5 + 50_000);
    for (let i = 0; i < 4; i++) stream.write(grpcMessage(50_000));
    endWithTrailers(stream, { "grpc-status": "0", "grpc-message": "done" });
    await client.waitFor((f) => f.type === FrameType.DATA);
    await sleep(200);
    assert.equal(
      client.streamFrames(1).some((f) => f.type === FrameType.HEADERS && f.flags & Flag.END_STREAM),
      false,
      "trailers overtook DATA blocked by flow control",
    );
    client.windowUpdate(0, 1 << 20);
    client.windowUpdate(1, 1 << 20);
    const trailers = await client.trailers(1);
    assert.equal(trailers.headers?.["grpc-status"], "0");
    assert.equal(trailers.headers?.["grpc-message"], "done");
    const frames = client.streamFrames(1);
    const kinds = frames.map((f) => f.type);
    assert.equal(kinds[0], FrameType.HEADERS);
    assert.equal(frames[0]!.headers?.[":status"], "200");
    assert.equal(kinds.at(-1), FrameType.HEADERS, "trailers are the last frame");
    assert.ok(kinds.slice(1, -1).every((k) => k === FrameType.DATA));
    const dataBytes = frames.filter((f) => f.type === FrameType.DATA)
      .reduce((n, f) => n + f.payload.byteLength, 0);
    assert.equal(dataBytes, total);
    assert.ok(
      !frames.some((f) => f.type === FrameType.DATA && f.flags & Flag.END_STREAM),
      "no empty DATA(END_STREAM) after the trailers",
    );
    assert.equal(client.grpcMessages(1).length, 4);
  } finally {
    client.destroy();
    await server.close();
  }
});

Deno.test("P1: Trailers-Only response is one HEADERS frame with END_STREAM", async () => {
  const server = await startServer();
  const { client, stream } = await openCall(server);
  try {
    endWithTrailers(stream, { "grpc-status": "16", "grpc-message": "no" }, {
      status: 200,
      headers: { "content-type": "application/grpc" },
    });
    const trailers = await client.trailers(1);
    await sleep(50);
    const frames = client.streamFrames(1);
    assert.equal(frames.length, 1, `frames: ${frames.map((f) => f.type)}`);
    assert.equal(trailers.headers?.[":status"], "200");
    assert.equal(trailers.headers?.["content-type"], "application/grpc");
    assert.equal(trailers.headers?.["grpc-status"], "16");
  } finally {
    client.destroy();
    await server.close();
  }
});

Deno.test("P2: RST_STREAM NO_ERROR closes the stream without an error", async () => {
  const server = await startServer();
  const { client, stream } = await openCall(server);
  try {
    const closed = new Promise<void>((resolve) => stream.once("close", resolve));
    client.rst(1, H2Error.NO_ERROR);
    await closed;
    await sleep(20);
    assert.deepEqual(server.streamErrors.map((e) => e.message), []);
  } finally {
    client.destroy();
    await server.close();
  }
});

Deno.test("P2: other RST codes still surface as stream errors", async () => {
  const server = await startServer();
  const { client, stream } = await openCall(server);
  try {
    const closed = new Promise<void>((resolve) => stream.once("close", resolve));
    client.rst(1, H2Error.PROTOCOL_ERROR);
    await closed;
    assert.deepEqual(server.streamErrors.map((e) => e.message), ["Got RST: PROTOCOL_ERROR"]);
  } finally {
    client.destroy();
    await server.close();
  }
});

Deno.test("P3: stream.destroy calls back, and the peer sees the stream reset", async () => {
  const server = await startServer();
  const { client, stream } = await openCall(server);
  try {
    const calledBack = new Promise<Error | null>((resolve) => stream.destroy(null, resolve));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = await Promise.race([
      calledBack,
      new Promise<string>((resolve) => timer = setTimeout(() => resolve("timeout"), 2_000)),
    ]);
    clearTimeout(timer);
    assert.equal(result, null, "destroy's callback ran without an error");
    const rst = await client.waitFor((f) => f.streamId === 1 && f.type === FrameType.RST_STREAM);
    assert.equal(new DataView(rst.payload.buffer).getUint32(0), H2Error.CANCEL);
  } finally {
    client.destroy();
    await server.close();
  }
});

Deno.test("P4: an open call finishes after the client's GOAWAY, then the socket closes", async () => {
  const server = await startServer();
  const { client, stream } = await openCall(server);
  try {
    // deno-lint-ignore no-explicit-any
    const conn: any = server.connections[0];
    const goawaySeen = new Promise<void>((resolve) =>
      conn.on("frame", (f: { type: string }) => f.type === "GOAWAY" && resolve())
    );
    client.goaway(0, H2Error.NO_ERROR);
    await goawaySeen;
    stream.respond(200, { "content-type": "application/grpc" });
    for (let i = 0; i < 20; i++) stream.write(grpcMessage(100));
    endWithTrailers(stream, { "grpc-status": "0" });
    const trailers = await client.trailers(1);
    assert.equal(trailers.headers?.["grpc-status"], "0");
    assert.equal(client.grpcMessages(1).length, 20);
    assert.ok(
      !client.frames.some((f) => f.type === FrameType.RST_STREAM),
      "the call was not reset",
    );
    // The client ends its side; with no stream left, the server closes the socket.
    stream.resume();
    client.data(1, new Uint8Array(0), true);
    await client.waitClosed();
    assert.ok(!client.frames.some((f) => f.type === FrameType.GOAWAY), "server sent no GOAWAY");
  } finally {
    client.destroy();
    await server.close();
  }
});

Deno.test("P5 and P6: a SPDY/3.1 stream with only Kubernetes headers, and output past 64 KiB to a peer that sends no WINDOW_UPDATE", async () => {
  const total = 300_000;
  let seen: Record<string, unknown> | undefined;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    const conn = createSpdyConnection(socket, { protocol: "spdy", isServer: true });
    openSpdySendWindow(conn);
    conn.on("error", () => {});
    conn.on("stream", (st) => {
      seen = { ...st.headers };
      st.respond(200, {});
      st.write(new Uint8Array(total).fill(7));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const client = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await client.write(synStream(1, { streamtype: "stdout" }));
    // Read frames; count DATA bytes of stream 1. Never send WINDOW_UPDATE.
    let buf: Uint8Array = new Uint8Array(0);
    let data = 0;
    let reply = false;
    const deadline = Date.now() + 10_000;
    const chunk = new Uint8Array(65536);
    while (data < total && Date.now() < deadline) {
      const n = await Promise.race([
        client.read(chunk),
        new Promise<null>((r) => setTimeout(() => r(null), 2000)),
      ]);
      if (n === null) break;
      const r = readFrames(concatBytes([buf, chunk.subarray(0, n)]));
      buf = r.rest;
      for (const f of r.frames) {
        if (f.control) reply ||= f.type === 2; // SYN_REPLY
        else if (f.stream === 1) data += f.data.byteLength;
      }
    }
    assert.equal(seen?.["streamtype"], "stdout", "P5: the stream was accepted");
    assert.equal(seen?.[":method"], "POST");
    assert.ok(reply, "the server answered with SYN_REPLY");
    assert.equal(data, total, "P6: all output arrived without WINDOW_UPDATE");
  } finally {
    client.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
});
