/**
 * Link economy, end to end: the real aranya process and two real arhat
 * processes (one over websocket, one over gRPC) on Podman. Once the devices
 * are connected and synced, 45 seconds of idle put no message on either link
 * at the session layer (aranya's `aranya_link_messages_total`, which counts
 * every command and message by kind and leaves out transport keepalives),
 * although aranya renews the Leases every 2 s and arhat measures its node
 * every 2 s: nothing is polled, and an unchanged node is not reported.
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { kill, spawnArhat } from "./arhat_harness.ts";
import { arhatDeviceYaml, websocketMethod } from "./edge_fixtures.ts";
import { uniqueName } from "./fixtures.ts";
import { freePort, sleep } from "./process.ts";
import { inWorld, TEST } from "./edge_world.ts";

/**
 * Idle window; longer than arhat's check interval and many Lease renewals.
 * `LINK_ECONOMY_IDLE_SECONDS` lengthens it, e.g. to count the bytes of a
 * 10-minute idle with tcpdump (the test prints its ports and window).
 */
const IDLE_MS = 1000 * Number(Deno.env.get("LINK_ECONOMY_IDLE_SECONDS") || 45);

/** `aranya_link_messages_total` samples: `transport direction kind` -> count. */
async function linkMessages(httpPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const out = new Map<string, number>();
  const re =
    /^aranya_link_messages_total\{transport="([^"]+)",direction="([^"]+)",kind="([^"]+)"\} (\d+)$/gm;
  for (const m of text.matchAll(re)) out.set(`${m[1]} ${m[2]} ${m[3]}`, Number(m[4]));
  return out;
}

const leaseRenewTime = (w: { cluster: { kubectlOk(a: string[]): Promise<string> } }, n: string) =>
  w.cluster.kubectlOk([
    "get",
    "lease",
    "-n",
    "kube-node-lease",
    n,
    "-o",
    "jsonpath={.spec.renewTime}",
  ]);

Deno.test({
  name: "e2e: an idle device's link carries nothing but keepalives (websocket and gRPC)",
  ...TEST,
  fn: () =>
    inWorld(async (w) => {
      const wsPort = freePort();
      const grpcPort = freePort();
      const httpPort = freePort();
      const tls = { certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` };
      const aranya = await w.startAranya(
        aranyaConfigYaml({
          kubeconfig: w.kubeconfig,
          namespaces: [w.ns],
          httpPort,
          websocket: { port: wsPort, ...tls },
          grpc: { port: grpcPort, ...tls },
          node: { heartbeat: "2s", leaseDuration: "10s" },
        }),
      );
      await waitAranyaReady(aranya, httpPort);
      const ws = uniqueName("ws");
      const grpc = uniqueName("grpc");
      const wsToken = await w.createDevice(ws);
      const grpcToken = await w.createDevice(grpc, { connectivity: { method: "grpc" } });
      // arhat measures its node every 2 s (the floor); an unchanged node is never sent.
      const fastChecks = "nodeStatus: { checkInterval: 2s }\n";
      const config = async (name: string, methods: string) => {
        const path = `${w.arhatDir}/${name}-arhat.yaml`;
        await Deno.writeTextFile(
          path,
          arhatDeviceYaml({
            namespace: w.ns,
            name,
            stateDir: `${w.arhatDir}/${name}-state`,
            runtimeSocket: w.runtimeSocket,
            image: w.services.endpoints.testImage,
            methods,
          }) + fastChecks,
        );
        return path;
      };
      w.arhat = spawnArhat(
        await config(ws, websocketMethod(wsPort, wsToken, `${w.arhatDir}/ca.crt`)),
      );
      const grpcArhat = spawnArhat(
        await config(
          grpc,
          `    - method: grpc
      target: localhost:${grpcPort}
      tokenFile: ${grpcToken}
      tls: { caFile: ${w.arhatDir}/ca.crt }
`,
        ),
      );
      try {
        await w.nodeReady(ws, "True");
        await w.nodeReady(grpc, "True");
        // The connect-time exchanges (full node sync, the pod list) are over within a moment.
        await sleep(3000);
        const before = await linkMessages(httpPort);
        for (const t of ["websocket", "grpc"]) {
          assert.equal(before.get(`${t} sent CMD_NODE_INFO_GET`), 1, `${t}: one full sync`);
          assert.equal(before.get(`${t} received MSG_NODE_STATUS`), 1, `${t}: its reply`);
        }
        const renewed = [await leaseRenewTime(w, ws), await leaseRenewTime(w, grpc)];

        const idleFrom = Date.now() / 1000;
        await sleep(IDLE_MS);
        const idleTo = Date.now() / 1000;

        const after = await linkMessages(httpPort);
        const moved = [...after].filter(([k, v]) => (before.get(k) ?? 0) !== v)
          .map(([k, v]) => `${k}: +${v - (before.get(k) ?? 0)}`);
        assert.deepEqual(moved, [], "no message crossed an idle link");
        // Meanwhile aranya kept both Nodes alive from the links' liveness alone.
        assert.notEqual(await leaseRenewTime(w, ws), renewed[0], "websocket device's Lease");
        assert.notEqual(await leaseRenewTime(w, grpc), renewed[1], "gRPC device's Lease");
        await w.nodeReady(ws, "True", 1000);
        await w.nodeReady(grpc, "True", 1000);
        console.log(
          JSON.stringify({
            idleSeconds: IDLE_MS / 1000,
            idleFrom,
            idleTo,
            wsPort,
            grpcPort,
            linkMessagesAtConnect: Object.fromEntries(before),
            linkMessagesWhileIdle: moved.length,
          }),
        );
      } finally {
        await kill(grpcArhat);
      }
    }),
});
