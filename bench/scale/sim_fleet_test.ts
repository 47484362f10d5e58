/**
 * The simulated fleet against aranya's real parts in this process (EdgeDevice
 * controller, two websocket listeners with Secret authentication standing in
 * for two replicas, one DeviceSession per link) on the real control plane:
 * three devices connect with their Secrets' tokens over the URLs [A, dead, B]
 * (device k starts at URL k % 3: device 0 at A, device 1 at the dead one,
 * whose failed dial moves it on to B, device 2 at B), their Nodes turn Ready
 * with the simulated node info, they answer CMD_POD_LIST with no pods, and a
 * device whose link is cut dials the next URLs (the dead one, then B) and is
 * served there.
 */
import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { V1Node } from "@kubernetes/client-node";
import { testClients } from "@aranya/aranya/kube/testing/test_clients";
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { SecretAuthenticator } from "@aranya/aranya/connectivity/secret_authenticator";
import { WebSocketLinkServer } from "@aranya/aranya/connectivity/websocket/ws_link_server";
import { EdgeDeviceController } from "@aranya/aranya/edgedevice/controller";
import { credentialsSecretName } from "@aranya/aranya/edgedevice/types";
import type { DeviceSession } from "@aranya/aranya/virtualnode/device_session";
import { onlyReplicaSession } from "@aranya/aranya/virtualnode/testing/only_replica_session";
import { CmdKind } from "@aranya/common/envelope";
import type { Link } from "@aranya/common/link";
import { applyCrds, eventually, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { testTls } from "@aranya/e2e/link/test_tls";
import { freePort } from "@aranya/e2e/process";
import {
  PodDeleteCmdSchema,
  PodListCmdSchema,
  PodStatusListMsgSchema,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import { SimFleet } from "./sim_fleet.ts";

const ready = (n: V1Node) =>
  n.status?.conditions?.find((c) => c.type === "Ready")?.status === "True";

Deno.test({
  name: "simulated devices connect with their tokens and their Nodes turn Ready",
  // The informer watch, the listener and the fleet's sockets outlive steps; all stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const ns = uniqueName("simfleet");
    const names = [0, 1, 2].map((i) => `${ns}-d${i}`);
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const custom = kc.custom;
    const coordination = kc.coordination;
    const tls = await testTls();
    const portA = freePort();
    const portB = freePort();
    const deadPort = freePort(); // nothing listens there
    const ac = new AbortController();
    const fleetAc = new AbortController();
    const sessions = new Map<string, DeviceSession>();
    const links = new Map<string, Link>();
    /** The listener ("A" or "B") each device's latest link arrived at. */
    const via = new Map<string, "A" | "B">();
    const runs: Promise<void>[] = [];
    const controller = new EdgeDeviceController({
      http: kc.http,
      core,
      custom,
      coordination,
    });
    const authenticator = new SecretAuthenticator({
      core,
      cacheMs: 0,
      devices: (key) => controller.device(key),
    });
    const registry = new MemoryLinkRegistry();
    const servers = { A: portA, B: portB };
    const listeners = Object.fromEntries(
      Object.entries(servers).map(([name, port]) => [
        name,
        new WebSocketLinkServer({
          hostname: "127.0.0.1",
          port,
          tls: { cert: tls.cert, key: tls.key },
          authenticator,
          registry,
        }),
      ]),
    ) as Record<"A" | "B", WebSocketLinkServer>;
    const url = (port: number) => `wss://localhost:${port}/v1/link`;
    const fleet = new SimFleet({
      urls: [url(portA), url(deadPort), url(portB)],
      ca: tls.ca,
      backoff: { initialMs: 100, maxMs: 1000 },
    });
    try {
      await applyCrds(cluster);
      await cluster.kubectlOk(["create", "namespace", ns]);
      runs.push(controller.run(ac.signal));
      const onLink = (at: "A" | "B") => (link: Link) => {
        const s = onlyReplicaSession(link, { core, coordination, custom });
        sessions.set(link.device, s);
        links.set(link.device, link);
        via.set(link.device, at);
        runs.push(s.run());
      };
      runs.push(listeners.A.run(ac.signal, onLink("A")));
      runs.push(listeners.B.run(ac.signal, onLink("B")));
      await Promise.all([controller.ready, listeners.A.ready, listeners.B.ready]);
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "List",
          items: names.map((name) => ({
            apiVersion: "aranya.arhat.dev/v1alpha1",
            kind: "EdgeDevice",
            metadata: { name },
          })),
        }),
      );
      const fleetRun = fleet.run(fleetAc.signal);
      runs.push(fleetRun);
      await fleet.ready;
      for (const name of names) {
        const b64 = await eventually(`the credentials Secret of "${name}"`, async () => {
          const r = await cluster.kubectl([
            "get",
            "secret",
            "-n",
            ns,
            credentialsSecretName(name),
            "-o",
            "jsonpath={.data.token}",
          ]);
          return r.code === 0 && r.stdout ? r.stdout : undefined;
        });
        fleet.add({ namespace: ns, name, token: atob(b64), index: names.indexOf(name) });
      }

      const nodes = await eventually("all three Nodes Ready", async () => {
        const list = await core.listNode({ labelSelector: `arhat.dev/namespace=${ns}` });
        return list.items.length === 3 && list.items.every(ready) ? list.items : undefined;
      }, 60_000);
      for (const n of nodes) {
        const info = n.status!.nodeInfo!;
        assert.equal(info.operatingSystem, "linux");
        assert.equal(info.kubeletVersion, "arhat/0.1.0-sim");
        assert.equal(info.containerRuntimeVersion, "sim://0.1.0");
        assert.equal(n.status!.capacity!.pods, "110");
        assert.equal(n.status!.capacity!.cpu, "4"); // 4000m, canonicalized by the API server
      }
      const stats = fleet.stats();
      assert.equal(stats.devices, 3);
      assert.equal(stats.connected, 3);
      assert.ok((stats.commands.CMD_NODE_INFO_GET ?? 0) >= 3, JSON.stringify(stats));
      // Device k started at URL k % 3; device 1's dial to the dead URL failed, so it went on to B.
      assert.deepEqual(names.map((x) => via.get(`${ns}/${x}`)), ["A", "B", "B"]);
      assert.ok(stats.dialFailures >= 1, JSON.stringify(stats));
      assert.deepEqual(stats.connectedByUrl, [1, 0, 2]);

      // CMD_POD_LIST: an empty list.
      const first = sessions.get(`${ns}/${names[0]}`)!;
      const reply = await first.client.request(
        CmdKind.CMD_POD_LIST,
        toBinary(PodListCmdSchema, create(PodListCmdSchema, {})),
      );
      assert.equal(fromBinary(PodStatusListMsgSchema, reply.payload).pods.length, 0);

      // CMD_POD_DELETE of a pod it does not run: DELETED, as arhat answers.
      const uid = crypto.randomUUID();
      const deleted = fromBinary(
        PodStatusMsgSchema,
        (await first.client.request(
          CmdKind.CMD_POD_DELETE,
          toBinary(PodDeleteCmdSchema, create(PodDeleteCmdSchema, { uid })),
        )).payload,
      );
      assert.equal(deleted.uid, uid);
      assert.equal(deleted.phase, PodStatusMsg_Phase.DELETED);

      // Anything else: not supported, and counted.
      await assert.rejects(
        first.client.request(CmdKind.CMD_POD_ENSURE, new Uint8Array()),
        /not supported/,
      );
      assert.equal(fleet.stats().unsupported.CMD_POD_ENSURE, 1);

      // A cut link: the device moves on to the next URLs (the dead one, then B), is connected
      // once more, and its Node is Ready again through B.
      const connects = stats.connects;
      const failures = fleet.stats().dialFailures;
      links.get(`${ns}/${names[0]}`)!.close("cut by the test");
      const again = await eventually("the cut device to dial again", () => {
        const s = fleet.stats();
        return Promise.resolve(s.connects > connects && s.connected === 3 ? s : undefined);
      }, 30_000);
      assert.equal(via.get(`${ns}/${names[0]}`), "B");
      assert.ok(again.dialFailures > failures, JSON.stringify(again));
      assert.deepEqual(again.connectedByUrl, [0, 0, 3]);
      await eventually("the cut device's Node Ready again", async () => {
        const n = await core.readNode({ name: names[0]! });
        return ready(n) ? n : undefined;
      }, 30_000);
    } finally {
      fleetAc.abort();
      // Delete while the controller still runs, so it deletes the Nodes.
      await cluster.kubectl(["delete", "ed", "--all", "-n", ns, "--timeout=60s"]);
      ac.abort();
      await Promise.allSettled(runs);
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await cluster.release();
    }
  },
});
