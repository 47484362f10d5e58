/**
 * GrpcLinkServer with arhat's GrpcLinkDialer, a raw HTTP/2 client and stock
 * grpc-js clients, all on 127.0.0.1: authentication before delivery, one link
 * per device, frame order and size, per-link failure, shutdown without
 * GOAWAY, abuse, TLS.
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import { abruptGrpcDisconnects } from "@aranya/e2e/link/grpc_fixture";
import { FrameType, grpcFrame, RawH2Client } from "@aranya/e2e/link/h2_raw_client";
import { makeTestCerts } from "@aranya/e2e/link/test_certs";
import { GrpcLinkDialer } from "@aranya/arhat/connectivity/grpc/grpc_link_dialer";
import {
  AlreadyExistsError,
  CanceledError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { DeviceCredentials, Link, LinkCloseInfo } from "@aranya/common/link";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import {
  DEFAULT_GRPC_MAX_FRAME_SIZE,
  DEVICE_METADATA,
  GrpcLinkServer,
  type GrpcLinkServerOptions,
  SYNC_PATH,
} from "./grpc_link_server.ts";
import { GrpcStatus } from "./grpc_server.ts";
import { SessionClient } from "@aranya/common/session/session_client";

const CACHE = new URL("../../../.cache/test-grpc", import.meta.url).pathname;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const never = new AbortController().signal;

/** Records every frame a link delivers. */
class Recorder {
  readonly frames: Uint8Array[] = [];
  #waiters: Array<() => void> = [];
  constructor(readonly link: Link) {
    link.start((f) => {
      this.frames.push(f);
      for (const w of this.#waiters.splice(0)) w();
    });
  }
  async waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length < n) {
      if (Date.now() > deadline) {
        throw new Error(`Got ${this.frames.length} of ${n} frames in ${timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

interface Harness {
  server: GrpcLinkServer;
  port: number;
  auth: StaticAuthenticator;
  registry: MemoryLinkRegistry;
  /** Links handed to onLink, in order. */
  links: Link[];
  nextLink(): Promise<Link>;
  /** Credentials the authenticator was asked about. */
  authCalls: { device: string; credentials: DeviceCredentials }[];
  stop(): Promise<void>;
}

async function startHarness(
  opts: Partial<GrpcLinkServerOptions> & { authDelayMs?: number } = {},
): Promise<Harness> {
  const auth = new StaticAuthenticator();
  auth.setToken("ns/dev1", "token-1");
  auth.setToken("ns/dev2", "token-2");
  const authCalls: Harness["authCalls"] = [];
  const registry = new MemoryLinkRegistry();
  const links: Link[] = [];
  let waiting: ((l: Link) => void) | undefined;
  const server = new GrpcLinkServer({
    hostname: "127.0.0.1",
    port: 0,
    registry,
    authenticator: {
      authenticate: async (device, credentials) => {
        authCalls.push({ device, credentials });
        if (opts.authDelayMs) await sleep(opts.authDelayMs);
        return auth.authenticate(device, credentials);
      },
    },
    ...opts,
  });
  const ac = new AbortController();
  const done = server.run(ac.signal, (link) => {
    links.push(link);
    waiting?.(link);
    waiting = undefined;
  });
  await server.ready;
  return {
    server,
    port: server.port,
    auth,
    registry,
    links,
    authCalls,
    nextLink: () => new Promise((resolve) => waiting = resolve),
    stop: async () => {
      ac.abort();
      await done;
    },
  };
}

function dialer(h: Harness, device = "ns/dev1", token = "token-1") {
  return new GrpcLinkDialer({ target: `127.0.0.1:${h.port}`, device, token });
}

async function connect(h: Harness, device = "ns/dev1", token = "token-1") {
  const serverSide = h.nextLink();
  const device_ = await dialer(h, device, token).dial(never);
  return { device: device_, aranya: await serverSide };
}

async function rawSync(port: number, metadata: Record<string, string>) {
  const c = await RawH2Client.connect({ host: "127.0.0.1", port });
  c.start();
  c.grpcCall(1, SYNC_PATH, metadata);
  return c;
}

const noGoaway = (c: RawH2Client) =>
  assert.ok(!c.frames.some((f) => f.type === FrameType.GOAWAY), "server sent GOAWAY");

const frame = (i: number, size = 8) => {
  const f = new Uint8Array(size).fill(0x5a);
  new DataView(f.buffer).setUint32(0, i);
  return f;
};
const index = (f: Uint8Array) => new DataView(f.buffer, f.byteOffset).getUint32(0);

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<T>((_, reject) => t = setTimeout(() => reject(new Error(what)), ms)),
    ]);
  } finally {
    clearTimeout(t);
  }
}

Deno.test("valid token: dial resolves with a link once aranya accepted it; frames flow both ways", async () => {
  const h = await startHarness();
  try {
    const { device, aranya } = await connect(h);
    assert.equal(aranya.device, "ns/dev1");
    assert.equal(aranya.transport, "grpc");
    assert.equal(aranya.maxFrameSize, DEFAULT_GRPC_MAX_FRAME_SIZE);
    assert.equal(device.device, "ns/dev1");
    assert.equal(h.registry.get("ns/dev1"), aranya);
    assert.deepEqual(h.authCalls, [{ device: "ns/dev1", credentials: { token: "token-1" } }]);
    const up = new Recorder(aranya);
    const down = new Recorder(device);
    await device.send(new Uint8Array([1, 2, 3]));
    await aranya.send(new Uint8Array([4, 5]));
    await up.waitFor(1);
    await down.waitFor(1);
    assert.deepEqual(up.frames, [new Uint8Array([1, 2, 3])]);
    assert.deepEqual(down.frames, [new Uint8Array([4, 5])]);
    device.close();
    await device.closed;
  } finally {
    await h.stop();
  }
});

Deno.test("bad credentials: UNAUTHENTICATED (Trailers-Only), nothing delivered, nothing claimed", async () => {
  // A slow authenticator, so the client's messages arrive before the verdict.
  const h = await startHarness({ authDelayMs: 150 });
  try {
    const c = await rawSync(h.port, {
      [DEVICE_METADATA]: "ns/dev1",
      authorization: "Bearer wrong",
    });
    c.data(1, grpcFrame(new Uint8Array([9, 9, 9])));
    const t = await c.trailers(1);
    assert.equal(t.headers?.["grpc-status"], String(GrpcStatus.UNAUTHENTICATED));
    assert.equal(c.streamFrames(1).length, 1, "Trailers-Only: no headers, no messages before");
    await c.waitClosed();
    noGoaway(c);
    c.destroy();

    await assert.rejects(dialer(h, "ns/dev1", "wrong").dial(never), UnauthenticatedError);
    await assert.rejects(dialer(h, "ns/dev2", "token-1").dial(never), UnauthenticatedError);
    await assert.rejects(
      new GrpcLinkDialer({ target: `127.0.0.1:${h.port}`, device: "ns/dev1" }).dial(never),
      UnauthenticatedError,
    );
    await assert.rejects(dialer(h, "not a device", "token-1").dial(never), (err: Error) => {
      assert.ok(err instanceof UnauthenticatedError);
      assert.match(
        err.message,
        /must name the device as "<namespace>\/<name>", got "not a device"/,
      );
      return true;
    });
    assert.equal(h.links.length, 0, "onLink never ran");
    assert.equal(h.registry.size, 0);
  } finally {
    await h.stop();
  }
});

Deno.test("a failing authenticator or registry: UNAVAILABLE or INTERNAL, and the server keeps serving", async () => {
  const h = await startHarness();
  const registry = new MemoryLinkRegistry();
  let failAuth = true;
  const odd = new GrpcLinkServer({
    hostname: "127.0.0.1",
    port: 0,
    authenticator: {
      authenticate: () =>
        failAuth ? Promise.reject(new Error("API server down")) : Promise.resolve(),
    },
    registry: {
      claim: () => {
        throw new Error("registry broke");
      },
      release: (l) => registry.release(l),
      get: (d) => registry.get(d),
    },
  });
  const ac = new AbortController();
  const done = odd.run(ac.signal, () => {});
  try {
    await odd.ready;
    const d = new GrpcLinkDialer({ target: `127.0.0.1:${odd.port}`, device: "ns/x", token: "t" });
    await assert.rejects(d.dial(never), (err: Error) => {
      assert.ok(err instanceof UnavailableError);
      assert.match(err.message, /cannot check the credentials of device "ns\/x" now/);
      return true;
    });
    failAuth = false;
    await assert.rejects(d.dial(never), /Internal error in aranya/);
    // The other server in this process is unaffected; so is this one's listener.
    const { device } = await connect(h);
    device.close();
    await assert.rejects(d.dial(never), /Internal error in aranya/);
  } finally {
    ac.abort();
    await done;
    await h.stop();
  }
});

Deno.test("second connection of a device: ALREADY_EXISTS; the first link keeps working", async () => {
  const h = await startHarness();
  try {
    const { device, aranya } = await connect(h);
    await assert.rejects(dialer(h).dial(never), (err: Error) => {
      assert.ok(err instanceof AlreadyExistsError);
      assert.equal(err.message, 'Device "ns/dev1" is already connected');
      return true;
    });
    assert.equal(h.links.length, 1);
    assert.equal(h.registry.get("ns/dev1"), aranya);
    const up = new Recorder(aranya);
    await device.send(new Uint8Array([1]));
    await up.waitFor(1);
    // Once the first link is gone, the device may connect again.
    device.close();
    await aranya.closed;
    const again = await connect(h);
    assert.equal(h.registry.get("ns/dev1"), again.aranya);
    again.device.close();
  } finally {
    await h.stop();
  }
});

Deno.test("1000 frames each way arrive in order", async () => {
  const h = await startHarness();
  try {
    const { device, aranya } = await connect(h);
    const up = new Recorder(aranya);
    const down = new Recorder(device);
    const n = 1000;
    await Promise.all([
      (async () => {
        for (let i = 0; i < n; i++) await device.send(frame(i, 4 + (i % 300)));
      })(),
      Promise.all(Array.from({ length: n }, (_, i) => aranya.send(frame(i, 4 + (i % 700))))),
    ]);
    await up.waitFor(n);
    await down.waitFor(n);
    assert.deepEqual(up.frames.map(index), Array.from({ length: n }, (_, i) => i));
    assert.deepEqual(down.frames.map(index), Array.from({ length: n }, (_, i) => i));
    assert.ok(up.frames.every((f, i) => f.byteLength === 4 + (i % 300)));
    assert.ok(down.frames.every((f, i) => f.byteLength === 4 + (i % 700)));
    device.close();
  } finally {
    await h.stop();
  }
});

Deno.test("a 60 KiB frame and a frame of exactly maxFrameSize pass both ways", async () => {
  const h = await startHarness();
  try {
    const { device, aranya } = await connect(h);
    const up = new Recorder(aranya);
    const down = new Recorder(device);
    const big = crypto.getRandomValues(new Uint8Array(60 * 1024));
    const max = new Uint8Array(DEFAULT_GRPC_MAX_FRAME_SIZE).fill(1);
    await device.send(big);
    await device.send(max);
    await aranya.send(big);
    await aranya.send(max);
    await up.waitFor(2);
    await down.waitFor(2);
    assert.deepEqual(up.frames, [big, max]);
    assert.deepEqual(down.frames, [big, max]);
    device.close();
  } finally {
    await h.stop();
  }
});

Deno.test("a message above maxFrameSize closes only that link (RESOURCE_EXHAUSTED)", async () => {
  const h = await startHarness({ maxFrameSize: 1024 });
  const client = new grpc.Client(`127.0.0.1:${h.port}`, grpc.credentials.createInsecure(), {
    "grpc.client_idle_timeout_ms": 1_000,
  });
  try {
    const other = await connect(h, "ns/dev2", "token-2");
    const otherUp = new Recorder(other.aranya);
    // dev1 through a stock grpc-js client: arhat's own link refuses to send oversized frames.
    const md = new grpc.Metadata();
    md.set(DEVICE_METADATA, "ns/dev1");
    md.set("authorization", "Bearer token-1");
    const accepted = h.nextLink();
    const call = client.makeBidiStreamRequest<Buffer, Buffer>(
      SYNC_PATH,
      (b) => b,
      (b) => b,
      md,
    );
    call.on("error", () => {});
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    const dev1 = await accepted;
    const dev1Frames = new Recorder(dev1);
    call.write(Buffer.alloc(1025));
    const s = await status;
    assert.equal(s.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(s.details, "Received a message of 1025 bytes, above the limit of 1024");
    const info: LinkCloseInfo = await dev1.closed;
    assert.equal(info.by, "error");
    assert.equal(dev1Frames.frames.length, 0);
    assert.equal(h.registry.get("ns/dev1"), undefined);
    // dev2 is untouched.
    await other.device.send(new Uint8Array([2]));
    await otherUp.waitFor(1);
    assert.equal(h.registry.get("ns/dev2"), other.aranya);
    other.device.close();
  } finally {
    client.close();
    await h.stop();
  }
});

Deno.test("aranya's link.close(): status OK in trailers, then the TCP connection closes", async () => {
  const h = await startHarness();
  try {
    // Raw client: watch the wire.
    const accepted = h.nextLink();
    const c = await rawSync(h.port, {
      [DEVICE_METADATA]: "ns/dev1",
      authorization: "Bearer token-1",
    });
    const link = await accepted;
    const headers = await c.waitFor((f) => f.streamId === 1 && f.type === FrameType.HEADERS);
    assert.equal(headers.headers?.[":status"], "200", "response headers mean accepted");
    await link.send(new Uint8Array([1]));
    link.close("session over");
    const t = await c.trailers(1);
    assert.equal(t.headers?.["grpc-status"], "0");
    assert.equal(t.headers?.["grpc-message"], "session over");
    assert.deepEqual(c.grpcMessages(1), [new Uint8Array([1])]);
    await c.waitClosed();
    noGoaway(c);
    c.destroy();
    assert.deepEqual(await link.closed, { by: "local", reason: "session over" });

    // Dialer: the device's link closes "remote".
    const { device, aranya } = await connect(h);
    aranya.close("bye");
    const info = await within(device.closed, 5_000, "device link stayed open");
    assert.equal(info.by, "remote");
    assert.match(info.reason, /OK: bye/);
    await assert.rejects(device.send(new Uint8Array([1])));
  } finally {
    await h.stop();
  }
});

Deno.test("the device's link.close() closes aranya's link (remote)", async () => {
  const h = await startHarness();
  try {
    const { device, aranya } = await connect(h);
    device.close();
    const info = await within(aranya.closed, 5_000, "aranya link stayed open");
    assert.deepEqual(info, { by: "remote", reason: "Device closed its stream" });
    assert.equal(h.registry.size, 0);
  } finally {
    await h.stop();
  }
});

Deno.test("a device vanishing mid-stream (TCP reset) closes its link by error", async () => {
  const h = await startHarness();
  try {
    const accepted = h.nextLink();
    const c = await rawSync(h.port, {
      [DEVICE_METADATA]: "ns/dev1",
      authorization: "Bearer token-1",
    });
    const link = await accepted;
    const rec = new Recorder(link);
    c.data(1, grpcFrame(new Uint8Array([1])));
    await rec.waitFor(1);
    c.destroy();
    const info = await within(link.closed, 5_000, "link stayed open");
    assert.equal(info.by, "error");
    assert.equal(h.registry.size, 0);
  } finally {
    await h.stop();
  }
});

Deno.test("server keepalive PINGs leave a Deno grpc-js client's link up", async () => {
  const h = await startHarness({ keepaliveMs: 50 });
  try {
    const { device, aranya } = await connect(h);
    const up = new Recorder(aranya);
    let closed = false;
    device.closed.then(() => closed = true);
    for (let i = 0; i < 15; i++) {
      await sleep(100);
      await device.send(frame(i));
    }
    await up.waitFor(15);
    assert.equal(closed, false);
    assert.deepEqual(up.frames.map(index), Array.from({ length: 15 }, (_, i) => i));
    device.close();
  } finally {
    await h.stop();
  }
});

Deno.test("a device's own keepalive interval (keepaliveFor) replaces the server's on its connection", async () => {
  const h = await startHarness({
    keepaliveMs: 0,
    keepaliveFor: (device) => device === "ns/dev1" ? 100 : undefined,
  });
  const pinged = h.nextLink();
  const own = await rawSync(h.port, {
    [DEVICE_METADATA]: "ns/dev1",
    authorization: "Bearer token-1",
  });
  await pinged;
  const other = h.nextLink();
  const plain = await rawSync(h.port, {
    [DEVICE_METADATA]: "ns/dev2",
    authorization: "Bearer token-2",
  });
  await other;
  try {
    await sleep(550);
    const pings = (c: RawH2Client) => c.frames.filter((f) => f.type === FrameType.PING).length;
    assert.ok(pings(own) >= 3, `PINGs to the device with 100 ms: ${pings(own)}`);
    assert.equal(pings(plain), 0, "none where the server's keepalive is off");
    assert.equal(own.isClosed, false, "answered PINGs keep the connection");
  } finally {
    own.destroy();
    plain.destroy();
    await h.stop();
  }
});

Deno.test("server shutdown: trailers with 14 UNAVAILABLE, TCP closed, no GOAWAY; dialers see it", async () => {
  const h = await startHarness();
  let stopped = false;
  try {
    const dialed = await connect(h, "ns/dev2", "token-2");
    const accepted = h.nextLink();
    const c = await rawSync(h.port, {
      [DEVICE_METADATA]: "ns/dev1",
      authorization: "Bearer token-1",
    });
    const raw = await accepted;
    await raw.send(new Uint8Array([3]));
    await c.waitFor((f) => f.type === FrameType.DATA);
    await h.stop();
    stopped = true;
    const t = await c.trailers(1);
    assert.equal(t.headers?.["grpc-status"], String(GrpcStatus.UNAVAILABLE));
    assert.equal(t.headers?.["grpc-message"], "aranya is shutting down");
    await c.waitClosed();
    noGoaway(c);
    c.destroy();
    assert.equal((await raw.closed).by, "local");
    const info = await within(dialed.device.closed, 5_000, "dialer link stayed open");
    assert.equal(info.by, "remote");
    assert.match(info.reason, /UNAVAILABLE: aranya is shutting down/);
    assert.equal(h.registry.size, 0);
  } finally {
    if (!stopped) await h.stop();
  }
});

Deno.test({
  name: "1000 abrupt client disconnects leave the server serving (bounded time)",
  async fn() {
    const h = await startHarness();
    try {
      const started = Date.now();
      await Promise.all([
        abruptGrpcDisconnects(h.port, 1000),
        // Accepted calls killed mid-stream, too.
        (async () => {
          for (let i = 0; i < 50; i++) {
            const accepted = h.nextLink();
            const c = await rawSync(h.port, {
              [DEVICE_METADATA]: "ns/dev2",
              authorization: "Bearer token-2",
            });
            const link = await accepted;
            c.data(1, grpcFrame(new Uint8Array(100)).subarray(0, 50));
            c.destroy();
            await within(link.closed, 5_000, "killed link stayed open");
          }
        })(),
      ]);
      const ms = Date.now() - started;
      assert.ok(ms < 60_000, `took ${ms} ms`);
      // Still serving: a device connects and exchanges frames.
      const { device, aranya } = await connect(h);
      const up = new Recorder(aranya);
      await device.send(new Uint8Array([1]));
      await up.waitFor(1);
      assert.equal(h.registry.size, 1);
      device.close();
      console.log(`1000 abrupt + 50 killed accepted calls: ${ms} ms`);
    } finally {
      await h.stop();
    }
  },
});

Deno.test("TLS: token over TLS, client certificate instead of a token, wrong certificate refused", async () => {
  const certs = await makeTestCerts(`${CACHE}/link-tls`, [
    "ns/dev1",
    "ns/dev2",
    "ns/other",
  ]);
  const h = await startHarness({
    tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca, requestCert: true },
  });
  const tlsDialer = (device: string, token?: string, client?: { cert: string; key: string }) =>
    new GrpcLinkDialer({
      // A host name: Deno refuses an IP as TLS server name.
      target: `localhost:${h.port}`,
      device,
      token,
      tls: { ca: certs.ca, cert: client?.cert, key: client?.key },
    });
  try {
    const serverSide = h.nextLink();
    const byToken = await tlsDialer("ns/dev1", "token-1").dial(never);
    const up = new Recorder(await serverSide);
    await byToken.send(new Uint8Array([1]));
    await up.waitFor(1);
    byToken.close();
    await up.link.closed;

    const certSide = h.nextLink();
    const byCert = await tlsDialer("ns/dev2", undefined, certs.clients["ns/dev2"])
      .dial(never);
    const dev2 = await certSide;
    assert.equal(dev2.device, "ns/dev2");
    assert.deepEqual(h.authCalls.at(-1), {
      device: "ns/dev2",
      credentials: { certificateCN: "ns/dev2" },
    });
    byCert.close();

    await assert.rejects(
      tlsDialer("ns/dev1", undefined, certs.clients["ns/other"]).dial(never),
      UnauthenticatedError,
    );
  } finally {
    await h.stop();
  }
});

Deno.test("run(): a taken port rejects run and ready; an aborted signal rejects ready with CanceledError", async () => {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const server = new GrpcLinkServer({
      hostname: "127.0.0.1",
      port,
      authenticator: new StaticAuthenticator(),
      registry: new MemoryLinkRegistry(),
    });
    const ready = server.ready;
    await assert.rejects(server.run(new AbortController().signal, () => {}), /cannot listen/);
    await assert.rejects(ready, /cannot listen on "127.0.0.1:\d+"/);

    const ac = new AbortController();
    ac.abort();
    const early = new GrpcLinkServer({
      port: 0,
      authenticator: new StaticAuthenticator(),
      registry: new MemoryLinkRegistry(),
    });
    await early.run(ac.signal, () => {});
    await assert.rejects(early.ready, CanceledError);
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
});

Deno.test("a malformed message ends the call with 3 INVALID_ARGUMENT; only that link closes", async () => {
  const h = await startHarness();
  try {
    const other = await connect(h, "ns/dev2", "token-2");
    // As aranya runs it: the session layer on the link decodes every message.
    const accepted = h.nextLink();
    const c = await rawSync(h.port, {
      [DEVICE_METADATA]: "ns/dev1",
      authorization: "Bearer token-1",
    });
    const link = await accepted;
    new SessionClient(link).start();
    c.data(1, grpcFrame(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f])));
    const t = await c.trailers(1);
    assert.equal(t.headers?.["grpc-status"], String(GrpcStatus.INVALID_ARGUMENT));
    assert.equal(t.headers?.["grpc-message"], "malformed frame");
    assert.deepEqual(await link.closed, { by: "error", reason: "malformed frame" });
    c.destroy();
    // The other device's link is untouched.
    assert.equal(h.registry.get("ns/dev2"), other.aranya);
    other.device.close();
  } finally {
    await h.stop();
  }
});
