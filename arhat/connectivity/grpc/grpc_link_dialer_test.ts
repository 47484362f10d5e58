/**
 * GrpcLinkDialer against real servers on 127.0.0.1: refusals map to domain
 * errors, unreachable or silent servers, cancellation, backpressure and
 * keepalive. The peer is aranya's gRPC server layer (or a bare TCP listener).
 */
import * as grpc from "@grpc/grpc-js";
import assert from "node:assert/strict";
import net from "node:net";
import {
  type GrpcHandler,
  GrpcServer,
  type GrpcServerCall,
  GrpcStatus,
  type GrpcStatusCode,
} from "@aranya/aranya/connectivity/grpc/grpc_server";
import {
  AlreadyExistsError,
  CanceledError,
  ForbiddenError,
  InvalidInputError,
  NotSupportedError,
  ProtocolError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import {
  DEFAULT_GRPC_MAX_FRAME_SIZE,
  DEVICE_METADATA,
  GrpcLinkDialer,
  type GrpcLinkDialerOptions,
  statusToError,
  SYNC_PATH,
} from "./grpc_link_dialer.ts";

const never = new AbortController().signal;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function withServer(
  handler: GrpcHandler | undefined,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const server = new GrpcServer(
    { hostname: "127.0.0.1", port: 0, maxMessageSize: DEFAULT_GRPC_MAX_FRAME_SIZE },
    handler ? { [SYNC_PATH]: handler } : {},
  );
  const port = await server.listen();
  try {
    await fn(port);
  } finally {
    await server.shutdown();
  }
}

/** A TCP listener that accepts and never answers. */
async function withSilentServer(fn: (port: number) => Promise<void>): Promise<void> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    await fn((server.address() as net.AddressInfo).port);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
}

const dialer = (port: number, extra: Partial<GrpcLinkDialerOptions> = {}) =>
  new GrpcLinkDialer({ target: `127.0.0.1:${port}`, device: "ns/dev1", token: "t", ...extra });

Deno.test("statusToError maps gRPC codes to domain errors", () => {
  const cases: [number, new (...a: never[]) => Error][] = [
    [grpc.status.UNAUTHENTICATED, UnauthenticatedError],
    [grpc.status.ALREADY_EXISTS, AlreadyExistsError],
    [grpc.status.PERMISSION_DENIED, ForbiddenError],
    [grpc.status.INVALID_ARGUMENT, InvalidInputError],
    [grpc.status.UNIMPLEMENTED, NotSupportedError],
    [grpc.status.RESOURCE_EXHAUSTED, ProtocolError],
    [grpc.status.INTERNAL, ProtocolError],
    [grpc.status.CANCELLED, CanceledError],
    [grpc.status.UNAVAILABLE, UnavailableError],
    [grpc.status.DEADLINE_EXCEEDED, UnavailableError],
    [grpc.status.UNKNOWN, UnavailableError],
  ];
  for (const [code, type] of cases) {
    const err = statusToError({ code, details: "why" }, "h:1", "ns/d");
    assert.ok(err instanceof type, `${grpc.status[code]} -> ${err.name}`);
    assert.match(err.message, /why/);
  }
});

Deno.test("the dialer sends the device and the bearer token; dial resolves on response headers", async () => {
  const seen: Record<string, string | undefined>[] = [];
  await withServer((call) => {
    seen.push({
      device: call.metadata(DEVICE_METADATA),
      authorization: call.metadata("authorization"),
    });
    call.sendHeaders();
    call.start({ onMessage: () => {}, onHalfClose: () => call.end(0), onClose: () => {} });
  }, async (port) => {
    const link = await dialer(port).dial(never);
    assert.equal(link.transport, "grpc");
    assert.equal(link.maxFrameSize, DEFAULT_GRPC_MAX_FRAME_SIZE);
    assert.deepEqual(seen, [{ device: "ns/dev1", authorization: "Bearer t" }]);
    await assert.rejects(
      link.send(new Uint8Array(DEFAULT_GRPC_MAX_FRAME_SIZE + 1)),
      InvalidInputError,
    );
    link.close();
    assert.deepEqual(await link.closed, { by: "local", reason: "closed" });
    await assert.rejects(link.send(new Uint8Array(1)), UnavailableError);
  });
});

Deno.test("refusals before acceptance reject with the mapped error", async () => {
  const refusals: [GrpcStatusCode, new (...a: never[]) => Error][] = [
    [GrpcStatus.UNAUTHENTICATED, UnauthenticatedError],
    [GrpcStatus.ALREADY_EXISTS, AlreadyExistsError],
    [GrpcStatus.UNAVAILABLE, UnavailableError],
  ];
  for (const [code, type] of refusals) {
    await withServer((call) => call.end(code, "refused"), async (port) => {
      await assert.rejects(dialer(port).dial(never), (err: Error) => {
        assert.ok(err instanceof type, `${code} -> ${err.name}`);
        assert.match(err.message, /refused/);
        return true;
      });
    });
  }
  // A gRPC server without the Sync method.
  await withServer(undefined, async (port) => {
    await assert.rejects(dialer(port).dial(never), NotSupportedError);
  });
});

Deno.test("an unreachable target rejects with UnavailableError", async () => {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((resolve) => probe.close(resolve));
  const started = Date.now();
  await assert.rejects(dialer(port).dial(never), UnavailableError);
  assert.ok(Date.now() - started < 5_000);
});

Deno.test("a server that never answers: UnavailableError after acceptTimeoutMs, CanceledError on abort", async () => {
  await withSilentServer(async (port) => {
    const started = Date.now();
    await assert.rejects(
      dialer(port, { acceptTimeoutMs: 300 }).dial(never),
      (err: Error) => {
        assert.ok(err instanceof UnavailableError);
        assert.match(err.message, /did not accept the Sync call within 300 ms/);
        return true;
      },
    );
    assert.ok(Date.now() - started >= 250);

    const ac = new AbortController();
    const dialing = dialer(port).dial(ac.signal);
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(dialing, CanceledError);
  });
  const aborted = new AbortController();
  aborted.abort();
  await assert.rejects(dialer(1).dial(aborted.signal), CanceledError);
});

Deno.test("send() applies backpressure while aranya does not read", async () => {
  let call!: GrpcServerCall;
  const received: number[] = [];
  await withServer((c) => {
    call = c;
    c.sendHeaders(); // accepted, but not reading yet: flow control fills up
  }, async (port) => {
    const link = await dialer(port).dial(never);
    const frame = new Uint8Array(60 * 1024);
    let done = 0;
    const sends = Array.from({ length: 60 }, () => link.send(frame).then(() => done++));
    await sleep(300);
    assert.ok(done < 60, `all ${done} sends resolved although nobody read 3.6 MB`);
    call.start({
      onMessage: (m) => received.push(m.byteLength),
      onHalfClose: () => call.end(0),
      onClose: () => {},
    });
    await Promise.all(sends);
    for (let i = 0; i < 100 && received.length < 60; i++) await sleep(20);
    assert.equal(received.length, 60);
    link.close();
  });
});

Deno.test("keepalive PINGs are answered by aranya's server: the link stays up", async () => {
  await withServer((call) => {
    call.sendHeaders();
    call.start({ onMessage: () => {}, onHalfClose: () => call.end(0), onClose: () => {} });
  }, async (port) => {
    const link = await dialer(port, { keepaliveMs: 100 }).dial(never);
    let closed = false;
    link.closed.then(() => closed = true);
    await sleep(800);
    assert.equal(closed, false);
    await link.send(new Uint8Array([1]));
    link.close();
  });
});
