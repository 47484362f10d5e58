/**
 * The gRPC transport for the link conformance suite: aranya's
 * {@link GrpcLinkServer} on 127.0.0.1 (h2c, a free port kept across restarts)
 * and arhat's {@link GrpcLinkDialer}. The abuse helpers talk real HTTP/2: a
 * stock grpc-js client for malformed frames, raw sockets and grpc-js calls
 * for abrupt disconnects.
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import {
  DEFAULT_GRPC_MAX_FRAME_SIZE,
  DEVICE_METADATA,
  GrpcLinkServer,
  SYNC_PATH,
} from "@aranya/aranya/connectivity/grpc/grpc_link_server";
import { GrpcLinkDialer } from "@aranya/arhat/connectivity/grpc/grpc_link_dialer";
import { errorMessage } from "@aranya/common/errors";
import type { Link } from "@aranya/common/link";
import { type Logger, nullLogger } from "@aranya/common/log";
import type { FixtureStartOptions, TransportFixture, TransportHandle } from "./fixture.ts";
import { encodeFrame, Flag, FrameType, grpcFrame, RawH2Client } from "./h2_raw_client.ts";

const HOST = "127.0.0.1";

/** The gRPC {@link TransportFixture}. */
export const grpcFixture: TransportFixture = {
  name: "grpc",
  maxFrameSize: DEFAULT_GRPC_MAX_FRAME_SIZE,
  start: (opts) => startGrpcFixture(opts),
};

/** Starts the fixture's server; `log` is for debugging a failing run. */
export async function startGrpcFixture(
  opts: FixtureStartOptions,
  log: Logger = nullLogger,
): Promise<TransportHandle> {
  let running = await startServer(opts, 0, log);
  const port = running.server.port;
  let stopped = false;
  return {
    dialer: (device, token) =>
      new GrpcLinkDialer({ target: `${HOST}:${port}`, device, token, acceptTimeoutMs: 5_000 }),
    restart: async () => {
      await running.stop();
      running = await startServer(opts, port, log);
    },
    sendMalformed: (device, token, bytes) => sendRaw(port, device, token, bytes),
    abruptDisconnects: (n) => abruptGrpcDisconnects(port, n),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await running.stop();
    },
  };
}

interface RunningServer {
  server: GrpcLinkServer;
  stop(): Promise<void>;
}

async function startServer(
  opts: FixtureStartOptions,
  port: number,
  log: Logger,
): Promise<RunningServer> {
  // The old listener's port may take a moment to free up after a restart.
  for (let attempt = 0;; attempt++) {
    const server = new GrpcLinkServer({
      hostname: HOST,
      port,
      authenticator: opts.authenticator,
      registry: opts.registry,
      log,
    });
    const ac = new AbortController();
    const done = server.run(ac.signal, (link: Link) => opts.onLink(link));
    try {
      await server.ready;
    } catch (err) {
      await done.catch(() => {});
      if (attempt < 20 && /in use/i.test(errorMessage(err))) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      throw err;
    }
    return {
      server,
      stop: async () => {
        ac.abort();
        await done;
      },
    };
  }
}

const identity = (b: Buffer): Buffer => b;

/**
 * Opens an authenticated Sync call with a stock grpc-js client and sends
 * `bytes` as one gRPC message; resolves once the server ended the call (the
 * session layer rejects a malformed envelope; the transport rejects a message
 * above its frame limit with RESOURCE_EXHAUSTED). Rejects when the call was
 * refused, or stayed open for 5 s.
 */
export function sendRaw(
  port: number,
  device: string,
  token: string,
  bytes: Uint8Array,
  timeoutMs = 5_000,
): Promise<void> {
  const client = new grpc.Client(`${HOST}:${port}`, grpc.credentials.createInsecure(), {
    "grpc.client_idle_timeout_ms": 1_000,
  });
  const md = new grpc.Metadata();
  md.set(DEVICE_METADATA, device);
  md.set("authorization", `Bearer ${token}`);
  const call = client.makeBidiStreamRequest<Buffer, Buffer>(SYNC_PATH, identity, identity, md);
  return new Promise<void>((resolve, reject) => {
    let accepted = false;
    const timer = setTimeout(() => {
      call.cancel();
      client.close();
      reject(new Error(`gRPC server kept a malformed call open for more than ${timeoutMs} ms`));
    }, timeoutMs);
    call.on("error", () => {});
    call.on("data", () => {});
    call.on("metadata", () => {
      accepted = true;
      call.write(Buffer.from(bytes));
    });
    call.on("status", (status: grpc.StatusObject) => {
      clearTimeout(timer);
      client.close();
      if (accepted) resolve();
      else reject(new Error(`Sync call refused: ${status.code} ${status.details}`));
    });
  });
}

/**
 * Opens `n` connections to the gRPC server on `port` that end abruptly,
 * cycling through: a partial preface; a partial HEADERS frame; a call that
 * dies in its first DATA frame; a client GOAWAY followed by a reset; and a
 * grpc-js call canceled while the server authenticates it. At most 32 at a
 * time; resolves when all are done.
 */
export async function abruptGrpcDisconnects(port: number, n: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      try {
        await abruptOne(port, i % 5);
      } catch {
        // A connection the server closed first is just as abrupt.
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(32, n) }, worker));
}

async function abruptOne(port: number, kind: number): Promise<void> {
  if (kind === 4) return await canceledGrpcCall(port);
  const c = await RawH2Client.connect({ host: HOST, port });
  try {
    const preface = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    if (kind === 0) {
      c.write(preface.subarray(0, 11));
    } else if (kind === 1) {
      c.start();
      // A HEADERS frame announcing 200 bytes, cut after 20.
      c.write(
        encodeFrame(FrameType.HEADERS, Flag.END_HEADERS, 1, new Uint8Array(200)).subarray(
          0,
          29,
        ),
      );
    } else if (kind === 2) {
      c.start();
      c.grpcCall(1, SYNC_PATH, { [DEVICE_METADATA]: "abrupt/device", authorization: "Bearer x" });
      const data = encodeFrame(FrameType.DATA, 0, 1, grpcFrame(new Uint8Array(1000)));
      c.write(data.subarray(0, 300));
    } else {
      c.start();
      c.grpcCall(1, SYNC_PATH, { [DEVICE_METADATA]: "abrupt/device", authorization: "Bearer x" });
      c.goaway(0, 0);
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  } finally {
    c.destroy();
  }
}

function canceledGrpcCall(port: number): Promise<void> {
  const client = new grpc.Client(`${HOST}:${port}`, grpc.credentials.createInsecure(), {
    "grpc.client_idle_timeout_ms": 1_000,
  });
  const md = new grpc.Metadata();
  md.set(DEVICE_METADATA, "abrupt/device");
  md.set("authorization", "Bearer x");
  const call = client.makeBidiStreamRequest<Buffer, Buffer>(SYNC_PATH, identity, identity, md);
  call.on("error", () => {});
  call.on("data", () => {});
  return new Promise((resolve) => {
    call.on("status", () => {
      client.close();
      resolve();
    });
    call.write(Buffer.from("x"));
    setTimeout(() => call.cancel(), 1);
  });
}
