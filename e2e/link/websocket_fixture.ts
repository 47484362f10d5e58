/** The websocket transport under the link conformance suite. */
import { WebSocketLinkServer } from "@aranya/aranya/connectivity/websocket/ws_link_server";
import { WebSocketLinkDialer } from "@aranya/arhat/connectivity/websocket/ws_link_dialer";
import { freePort } from "../process.ts";
import type { FixtureStartOptions, TransportFixture, TransportHandle } from "./fixture.ts";
import { testTls } from "./test_tls.ts";

const MAX_FRAME = 256 * 1024 + 64;

export const websocketFixture: TransportFixture = {
  name: "websocket",
  maxFrameSize: MAX_FRAME,
  async start(opts: FixtureStartOptions): Promise<TransportHandle> {
    const tls = await testTls();
    const port = freePort();
    let ac = new AbortController();
    let running: Promise<void>;
    const launch = async () => {
      ac = new AbortController();
      const server = new WebSocketLinkServer({
        hostname: "127.0.0.1",
        port,
        tls: { cert: tls.cert, key: tls.key },
        authenticator: opts.authenticator,
        registry: opts.registry,
        maxFrameSize: MAX_FRAME,
      });
      running = server.run(ac.signal, opts.onLink);
      await server.ready;
    };
    await launch();
    const url = `wss://localhost:${port}/v1/link`;
    const dialer = (device: string, token: string) =>
      new WebSocketLinkDialer({ url, device, token, tls: { ca: tls.ca }, maxFrameSize: MAX_FRAME });
    let stopped = false;
    return {
      dialer,
      restart: async () => {
        ac.abort();
        await running;
        await launch();
      },
      sendMalformed: async (device, token, bytes) => {
        // A raw WebSocket, so that nothing on our side refuses to send the bytes.
        const client = Deno.createHttpClient({ caCerts: [tls.ca] });
        const ws = new WebSocket(url, {
          headers: { "x-arhat-device": device, authorization: `Bearer ${token}` },
          client,
        } as WebSocketOptions);
        ws.binaryType = "arraybuffer";
        try {
          const closed = new Promise<void>((resolve) => ws.onclose = () => resolve());
          await new Promise<void>((resolve, reject) => {
            ws.onmessage = (ev) => {
              if ((ev.data as ArrayBuffer).byteLength > 0) resolve(); // the accept frame
            };
            ws.onerror = () => reject(new Error("WebSocket failed before it was accepted"));
          });
          ws.send(bytes);
          const timedOut = await Promise.race([
            closed.then(() => false),
            new Promise<boolean>((r) => setTimeout(() => r(true), 5000)),
          ]);
          if (timedOut) {
            throw new Error("The server kept the connection open after a malformed frame");
          }
        } finally {
          ws.close();
          client.close();
        }
      },
      abruptDisconnects: async (n) => {
        const request = (key: string) =>
          new TextEncoder().encode(
            `GET /v1/link HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
              `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\nX-Arhat-Device: ns/abrupt\r\n\r\n`,
          );
        const batch = 50;
        for (let i = 0; i < n; i += batch) {
          await Promise.all(
            Array.from({ length: Math.min(batch, n - i) }, async (_, j) => {
              try {
                const conn = await Deno.connectTls({
                  hostname: "localhost",
                  port,
                  caCerts: [tls.ca],
                });
                const mode = (i + j) % 3;
                if (mode > 0) {
                  const key = btoa(
                    String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
                  );
                  const req = request(key);
                  // mode 1: half a request; mode 2: a whole upgrade, then gone.
                  await conn.write(mode === 1 ? req.subarray(0, 40) : req);
                  if (mode === 2) await conn.read(new Uint8Array(512)).catch(() => null);
                }
                conn.close();
              } catch { /* the server may reset us first; that is fine */ }
            }),
          );
        }
      },
      stop: async () => {
        if (stopped) return;
        stopped = true;
        ac.abort();
        await running;
      },
    };
  },
};
