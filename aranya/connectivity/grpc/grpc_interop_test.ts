/**
 * Interop: a stock @grpc/grpc-js client (e2e/node/grpc_sync_client.mjs) runs
 * as a separate process under Node and under Deno, over h2c and over TLS, and
 * completes a Sync exchange against GrpcLinkServer (an echo link handler):
 * accepted, every message echoed in order, status OK after half-close. A
 * refused device sees 16 UNAUTHENTICATED. The Node helpers are installed
 * with `npm ci` into e2e/node/node_modules if missing.
 */
import assert from "node:assert/strict";
import { makeTestCerts } from "@aranya/e2e/link/test_certs";
import { ensureNodeHelpers, NODE_HELPERS_DIR } from "@aranya/e2e/node_setup";
import type { Link } from "@aranya/common/link";
import { MemoryLinkRegistry } from "../link_registry.ts";
import { StaticAuthenticator } from "../testing/static_authenticator.ts";
import { GrpcLinkServer, type GrpcLinkServerTls } from "./grpc_link_server.ts";

const CACHE = new URL("../../../.cache/test-grpc", import.meta.url).pathname;
const SCRIPT = `${NODE_HELPERS_DIR}/grpc_sync_client.mjs`;

interface ClientResult {
  runtime: string;
  accepted: boolean;
  sent: number;
  received: number;
  inOrder: boolean;
  status: number;
  details: string;
  microsPerRoundTrip: number;
}

async function runClient(runtime: "node" | "deno", args: string[]): Promise<ClientResult> {
  const command = runtime === "node"
    ? new Deno.Command("node", { args: [SCRIPT, ...args], stdout: "piped", stderr: "piped" })
    // "deno" by name: the e2e permission set allows running it from PATH.
    : new Deno.Command("deno", {
      args: [
        "run",
        "--allow-net=127.0.0.1,localhost",
        `--allow-read=${CACHE},${NODE_HELPERS_DIR}`,
        "--allow-env",
        SCRIPT,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    });
  const out = await command.output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.equal(out.code, 0, `${runtime} client failed (code ${out.code}):\n${stdout}\n${stderr}`);
  return JSON.parse(stdout.split("\n").at(-1)!) as ClientResult;
}

async function startEcho(tls?: GrpcLinkServerTls) {
  const auth = new StaticAuthenticator();
  auth.setToken("ns/interop", "secret");
  const links: Link[] = [];
  const server = new GrpcLinkServer({
    hostname: "127.0.0.1",
    port: 0,
    tls,
    authenticator: auth,
    registry: new MemoryLinkRegistry(),
  });
  const ac = new AbortController();
  const done = server.run(ac.signal, (link) => {
    links.push(link);
    link.start((f) => void link.send(f).catch(() => {}));
  });
  await server.ready;
  return {
    port: server.port,
    links,
    stop: async () => {
      ac.abort();
      await done;
    },
  };
}

Deno.test({
  name: "interop: stock grpc-js under Node and Deno completes Sync over h2c and TLS",
  async fn(t) {
    await ensureNodeHelpers(() => {});
    const certs = await makeTestCerts(`${CACHE}/interop`);
    for (const secure of [false, true]) {
      const server = await startEcho(
        secure ? { cert: certs.server.cert, key: certs.server.key } : undefined,
      );
      try {
        const base = secure
          ? ["--target", `localhost:${server.port}`, "--ca", certs.caPath]
          : ["--target", `127.0.0.1:${server.port}`];
        for (const runtime of ["node", "deno"] as const) {
          await t.step(`${runtime}, ${secure ? "TLS" : "h2c"}`, async () => {
            const before = server.links.length;
            const r = await runClient(runtime, [
              ...base,
              "--device",
              "ns/interop",
              "--token",
              "secret",
              "--count",
              "500",
              "--size",
              "100",
            ]);
            assert.ok(r.runtime.startsWith(runtime), r.runtime);
            assert.deepEqual(
              {
                accepted: r.accepted,
                sent: r.sent,
                received: r.received,
                inOrder: r.inOrder,
                status: r.status,
              },
              { accepted: true, sent: 500, received: 500, inOrder: true, status: 0 },
            );
            assert.equal(server.links.length, before + 1);
            const info = await server.links.at(-1)!.closed;
            assert.deepEqual(info, { by: "remote", reason: "Device closed its stream" });

            const refused = await runClient(runtime, [
              ...base,
              "--device",
              "ns/interop",
              "--token",
              "wrong",
            ]);
            assert.equal(refused.accepted, false);
            assert.equal(refused.status, 16);
            assert.equal(server.links.length, before + 1);

            const timing = await runClient(runtime, [
              ...base,
              "--device",
              "ns/interop",
              "--token",
              "secret",
              "--count",
              "2000",
              "--mode",
              "pingpong",
            ]);
            assert.equal(timing.received, 2000);
            console.log(
              `${runtime} ${
                secure ? "TLS" : "h2c"
              }: ${timing.microsPerRoundTrip} µs per round trip`,
            );
          });
        }
      } finally {
        await server.stop();
      }
    }
  },
});
