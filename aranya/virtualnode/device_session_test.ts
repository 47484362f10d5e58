/**
 * A real arhat (on Podman) connects to aranya's websocket listener with the
 * token from the Secret the EdgeDevice controller made:
 *
 * - its Node turns Ready with the device's node info and its Lease is renewed;
 *   the EdgeDevice turns Connected (conditions, lastSeen, agent; the STATUS
 *   column of `kubectl get ed`), the virtual pod Running and Ready, and a
 *   Connected Event is recorded;
 * - an idle device costs only Lease renewals and sends and gets nothing on
 *   its link; a periodic sync refreshes lastSeen without asking the device;
 * - changing the device's Node labels keeps the link; a Node another writer
 *   turned Unknown (the node lifecycle controller) is written Ready again;
 * - over an in-memory link with arhat's node handler: nothing is asked after
 *   connect, a pushed MSG_NODE_STATUS change reaches the Node at once, a push
 *   that changes nothing shown is not written, and the Node status is
 *   rewritten when due from what the device last said (EdgeDevice timers
 *   override aranya's defaults);
 * - when arhat dies the Node goes Ready=False with reason
 *   EdgeDeviceDisconnected, the EdgeDevice Disconnected, the virtual pod not
 *   Ready, and a Warning Disconnected Event is recorded.
 */
import assert from "node:assert/strict";
import { MemoryLinkRegistry } from "../connectivity/link_registry.ts";
import { SecretAuthenticator } from "../connectivity/secret_authenticator.ts";
import { WebSocketLinkServer } from "../connectivity/websocket/ws_link_server.ts";
import { EdgeDeviceController } from "../edgedevice/controller.ts";
import { type EdgeDevice, VIRTUAL_IMAGE } from "../edgedevice/types.ts";
import { ApiEventRecorder } from "../kube/event_recorder.ts";
import { arhatDeviceYaml, waitDeviceToken, websocketMethod } from "@aranya/e2e/edge_fixtures";
import { applyCrds, eventually, uniqueName, useCluster, useServices } from "@aranya/e2e/fixtures";
import { testTls } from "@aranya/e2e/link/test_tls";
import { ROOT } from "@aranya/e2e/paths";
import { freePort, sleep } from "@aranya/e2e/process";
import { kill, spawnArhat } from "@aranya/e2e/arhat_harness";
import { DeviceSession, type WriteKind } from "./device_session.ts";
import { StaticMembership } from "../replicas/membership.ts";
import { NodeLease } from "../replicas/node_lease.ts";
import { create, toBinary } from "@bufbuild/protobuf";
import { MsgKind } from "@aranya/common/envelope";
import { memoryLinkPair } from "@aranya/common/testing/memory_link";
import { SessionServer } from "@aranya/common/session/session_server";
import {
  NodeCondition_Status,
  type NodeStatusMsg,
  NodeStatusMsgSchema,
} from "@aranya/proto/gen/aranya/node_pb";
import { Agent } from "@aranya/arhat/agent/agent";
import { nodeHandlers } from "@aranya/arhat/agent/handle_node";
import { testClients } from "../kube/testing/test_clients.ts";

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}
const byType = (list: Condition[] | undefined): Record<string, Condition> =>
  Object.fromEntries((list ?? []).map((c) => [c.type, c]));

/** Heartbeat of the sessions under test. */
const HEARTBEAT_MS = 1000;
/** Forced status sync: long enough for the idle window after connect, short for the test. */
const STATUS_SYNC_MS = 15_000;

Deno.test({
  name:
    "a connected device makes its Node, EdgeDevice and virtual pod Ready; a lost link undoes it",
  // Informer watch, websocket server and the arhat child outlive steps; all stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const services = await useServices();
    const ns = uniqueName("vn");
    const name = uniqueName("dev");
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const custom = kc.custom;
    const coordination = kc.coordination;
    const ac = new AbortController();
    const tls = await testTls();
    const port = freePort();
    const events = new ApiEventRecorder({ core });
    const sessions: { session: DeviceSession; done: boolean; run: Promise<void> }[] = [];
    /** Every message on the link at the session layer (keepalives are below it). */
    const linkMessages: string[] = [];
    const hooked: EdgeDevice[] = [];
    const controller = new EdgeDeviceController({
      http: kc.http,
      core,
      custom,
      coordination,
      namespaces: [ns],
      events,
      onDevice: (ed) => hooked.push(ed),
    });
    const server = new WebSocketLinkServer({
      hostname: "127.0.0.1",
      port,
      tls: { cert: tls.cert, key: tls.key },
      authenticator: new SecretAuthenticator({
        core,
        cacheMs: 0,
        devices: (key) => controller.device(key),
      }),
      registry: new MemoryLinkRegistry(),
    });
    const base = `${ROOT}/.cache/arhat-e2e/${crypto.randomUUID().slice(0, 8)}`;
    let arhat: ReturnType<typeof spawnArhat> | undefined;
    const running: Promise<void>[] = [];
    const getEd = async () =>
      JSON.parse(await cluster.kubectlOk(["get", "ed", name, "-n", ns, "-o", "json"]));
    const getPod = async () =>
      JSON.parse(await cluster.kubectlOk(["get", "pod", name, "-n", ns, "-o", "json"]));
    const statusColumn = async () =>
      (await cluster.kubectlOk(["get", "ed", name, "-n", ns, "--no-headers"])).trim().split(
        /\s+/,
      )[2];
    const eventList = async (): Promise<{ type: string; reason: string; message: string }[]> =>
      JSON.parse(
        await cluster.kubectlOk([
          "get",
          "events",
          "-n",
          ns,
          "--field-selector",
          `involvedObject.name=${name},involvedObject.kind=EdgeDevice`,
          "-o",
          "json",
        ]),
      ).items;
    const counts = (s: DeviceSession) => ({ ...s.writeCounts });
    const delta = (a: Record<WriteKind, number>, b: Record<WriteKind, number>) =>
      Object.fromEntries(Object.keys(a).map((k) => [k, b[k as WriteKind] - a[k as WriteKind]]));
    try {
      await applyCrds(cluster);
      await cluster.kubectlOk(["create", "namespace", ns]);
      running.push(controller.run(ac.signal));
      const membership = new StaticMembership("replica-a");
      running.push(server.run(ac.signal, (link) => {
        const lease = new NodeLease({ coordination, core, node: name, membership });
        const session = new DeviceSession({
          link,
          lease,
          kubelet: { address: "127.0.0.1", port: 10266 },
          virtualPodUid: () => controller.virtualPodUid(name),
          core,
          coordination,
          custom,
          events,
          heartbeatMs: HEARTBEAT_MS,
          statusSyncMs: STATUS_SYNC_MS,
          maxPods: () => 7,
          onMessage: (direction, kind) => linkMessages.push(`${direction} ${kind}`),
        });
        const entry = {
          session,
          done: false,
          run: lease.acquire(ac.signal, 40).then(() => session.run()),
        };
        entry.run.then(() => entry.done = true);
        sessions.push(entry);
      }));
      await Promise.all([controller.ready, server.ready]);
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "aranya.arhat.dev/v1alpha1",
          kind: "EdgeDevice",
          metadata: { name },
          spec: { node: { labels: { "example.com/site": "lab" } } },
        }),
      );
      const token = await waitDeviceToken(cluster, ns, name);
      assert.equal((await getEd()).status, undefined, "no status before the device connects");
      assert.equal((await getPod()).status.phase, "Pending");
      assert.ok(hooked.some((e) => e.metadata?.name === name), "onDevice was called");

      await Deno.mkdir(base, { recursive: true });
      await Deno.writeTextFile(`${base}/ca.crt`, tls.ca);
      await Deno.writeTextFile(`${base}/token`, token);
      await Deno.writeTextFile(
        `${base}/config.yaml`,
        arhatDeviceYaml({
          namespace: ns,
          name,
          stateDir: `${base}/state`,
          runtimeSocket: services.endpoints.podmanSocket,
          image: services.endpoints.testImage,
          methods: websocketMethod(port, `${base}/token`, `${base}/ca.crt`),
        }),
      );
      arhat = spawnArhat(`${base}/config.yaml`);
      const session = await eventually(
        "the device's session",
        () => Promise.resolve(sessions[0]?.session),
        60_000,
      );
      await session.connected;
      const atConnect = counts(session);
      let lastSeenAtConnect = "";

      await t.step("connected: Node, EdgeDevice and virtual pod are Ready", async () => {
        const node = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
        assert.equal(byType(node.status.conditions).Ready?.status, "True");
        assert.equal(node.status.nodeInfo.operatingSystem, "linux");
        assert.equal(node.status.nodeInfo.architecture, "amd64");
        assert.match(node.status.nodeInfo.containerRuntimeVersion, /^podman:\/\//);
        assert.equal(node.status.capacity.pods, "7", "spec.pod.allocatable caps the pods");
        // Where the replica holding the link serves the kubelet API, and that it holds it.
        assert.deepEqual(node.status.addresses, [{ type: "InternalIP", address: "127.0.0.1" }]);
        assert.equal(node.status.daemonEndpoints.kubeletEndpoint.Port, 10266);
        const lease = JSON.parse(
          await cluster.kubectlOk(["get", "lease", "-n", "kube-node-lease", name, "-o", "json"]),
        );
        assert.equal(lease.spec.holderIdentity, "replica-a");
        assert.equal(lease.metadata.ownerReferences[0].uid, node.metadata.uid);
        // The labels a kubelet sets, so DaemonSets selecting kubernetes.io/os land here.
        for (
          const [k, v] of Object.entries({
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
          })
        ) assert.equal(node.metadata.labels[k], v, k);

        const ed = await getEd();
        assert.equal(ed.status.phase, "Connected");
        assert.equal(ed.status.node, name);
        assert.equal(ed.status.virtualPod.uid, (await getPod()).metadata.uid);
        assert.equal(byType(ed.status.conditions).NodeOwned?.status, "True");
        const cond = byType(ed.status.conditions);
        assert.deepEqual(
          [cond.Connected?.status, cond.Connected?.reason, cond.Connected?.message],
          ["True", "EdgeDeviceConnected", "The device is connected over websocket"],
        );
        assert.equal(cond.NodeReady?.status, "True");
        assert.ok(Date.parse(ed.status.lastSeen) > Date.now() - 60_000, ed.status.lastSeen);
        lastSeenAtConnect = ed.status.lastSeen;
        assert.ok(ed.status.agent.version, "the agent's version");
        assert.equal(ed.status.agent.os, "linux");
        assert.equal(ed.status.agent.arch, "amd64");
        assert.match(ed.status.agent.runtime, /^podman:\/\//);
        assert.equal(await statusColumn(), "Connected");

        const pod = await getPod();
        assert.equal(pod.status.phase, "Running");
        const pc = byType(pod.status.conditions);
        for (const type of ["PodScheduled", "Initialized", "ContainersReady", "Ready"]) {
          assert.equal(pc[type]?.status, "True", type);
        }
        const [host, ...more] = pod.status.containerStatuses;
        assert.equal(more.length, 0);
        assert.equal(host.name, "host");
        assert.equal(host.ready, true);
        assert.equal(host.image, VIRTUAL_IMAGE);
        assert.ok(host.imageID);
        assert.equal(host.containerID, `aranya://${name}`);
        assert.ok(host.state.running.startedAt);
        assert.equal(pod.status.hostIP, "127.0.0.1");
        assert.ok(pod.status.startTime);
        // kubectl's READY and STATUS columns.
        const row = (await cluster.kubectlOk(["get", "pod", name, "-n", ns, "--no-headers"]))
          .trim().split(/\s+/);
        assert.deepEqual(row.slice(1, 3), ["1/1", "Running"]);

        const connected = (await eventList()).find((e) => e.reason === "Connected");
        assert.ok(connected, "a Connected Event");
        assert.equal(connected.type, "Normal");
        assert.deepEqual(
          {
            node: atConnect.node,
            edgeDevice: atConnect.edgeDevice,
            pod: atConnect.pod,
            event: atConnect.event,
          },
          // The Node once: its status write carries the os/arch labels too.
          { node: 1, edgeDevice: 1, pod: 1, event: 1 },
          "one write of each on connect",
        );
      });

      await t.step(
        "an idle device costs only Lease renewals, and nothing on its link",
        async () => {
          const messagesBefore = linkMessages.length;
          const renew1 = await cluster.kubectlOk([
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            name,
            "-o",
            "jsonpath={.spec.renewTime}",
          ]);
          const before = counts(session);
          await sleep(5000);
          const d = delta(before, counts(session));
          assert.deepEqual({ ...d, lease: 0 }, {
            lease: 0,
            node: 0,
            edgeDevice: 0,
            pod: 0,
            event: 0,
          });
          // Renewed while the link lives (a loaded machine may renew late, never more often than
          // one per heartbeat).
          assert.ok(d.lease! >= 1 && d.lease! <= 6, `lease renewals: ${d.lease}`);
          const renew2 = await cluster.kubectlOk([
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            name,
            "-o",
            "jsonpath={.spec.renewTime}",
          ]);
          assert.notEqual(renew1, renew2, "the lease is renewed while the link is alive");
          assert.deepEqual(linkMessages.slice(messagesBefore), [], "no request, no reply");
          assert.deepEqual(
            linkMessages.slice(0, 2),
            ["sent CMD_NODE_INFO_GET", "received MSG_NODE_STATUS"],
            "the full sync on connect",
          );
        },
      );

      await t.step("changing the Node's labels keeps the link", async () => {
        const before = counts(session);
        await cluster.kubectlOk([
          "patch",
          "ed",
          name,
          "-n",
          ns,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: { node: { labels: { "example.com/site": "field" } } } }),
        ]);
        await eventually("the Node's new label", async () => {
          const site = await cluster.kubectlOk([
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.metadata.labels.example\\.com/site}",
          ]);
          return site === "field" ? true : undefined;
        });
        await sleep(2 * HEARTBEAT_MS + 500);
        assert.equal(sessions.length, 1, "no new connection");
        assert.equal(sessions[0]!.done, false, "the session is alive");
        assert.equal(await statusColumn(), "Connected");
        const reasons = (await eventList()).map((e) => e.reason);
        assert.ok(!reasons.includes("Disconnected"), reasons.join(","));
        const node = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
        assert.equal(byType(node.status.conditions).Ready?.status, "True");
        const d = delta(before, counts(session));
        assert.equal(d.edgeDevice, 0, "no EdgeDevice status write for a label change");
      });

      await t.step(
        "a periodic status sync refreshes lastSeen, asking the device nothing",
        async () => {
          const messagesBefore = linkMessages.length;
          const before = counts(session);
          const seen = await eventually("a newer lastSeen", async () => {
            const s = (await getEd()).status.lastSeen;
            return s !== lastSeenAtConnect ? s : undefined;
          }, STATUS_SYNC_MS + 10_000);
          assert.ok(Date.parse(seen) > Date.parse(lastSeenAtConnect));
          const d = delta(before, counts(session));
          assert.equal(d.node, 1, "one Node status write");
          assert.equal(d.edgeDevice, 1, "one EdgeDevice status write");
          assert.equal(d.pod, 0);
          assert.equal(await statusColumn(), "Connected");
          assert.ok(
            !linkMessages.slice(messagesBefore).includes("sent CMD_NODE_INFO_GET"),
            linkMessages.slice(messagesBefore).join(", "),
          );
        },
      );

      await t.step(
        "a Node turned Unknown by another writer is written Ready again when seen",
        async () => {
          // What the node lifecycle controller writes when the heartbeats came late.
          const node = await core.readNode({ name });
          const unknown = await core.replaceNodeStatus({
            name,
            body: {
              ...node,
              status: {
                ...node.status,
                conditions: node.status!.conditions!.map((c) =>
                  c.type === "Ready"
                    ? { ...c, status: "Unknown", reason: "NodeStatusUnknown", message: "late" }
                    : c
                ),
              },
            },
          });
          const before = counts(session);
          session.nodeSeen(unknown);
          const ready = await eventually("the Node Ready again", async () => {
            const n = await core.readNode({ name });
            const r = n.status?.conditions?.find((c) => c.type === "Ready");
            return r?.status === "True" ? n : undefined;
          });
          assert.equal(delta(before, counts(session)).node, 1, "one Node status write");
          // Its own write seen again (and a Node whose Ready it wrote) writes nothing.
          const after = counts(session);
          session.nodeSeen(ready);
          session.nodeSeen(node);
          await sleep(2 * HEARTBEAT_MS + 500);
          assert.equal(delta(after, counts(session)).node, 0, "nothing more written");
        },
      );

      await t.step(
        "a lost link: Node NotReady, EdgeDevice Disconnected, pod not Ready",
        async () => {
          const lastSeen = (await getEd()).status.lastSeen;
          await kill(arhat!, "SIGKILL");
          const reason = await eventually("Ready=False", async () => {
            const out = await cluster.kubectlOk([
              "get",
              "node",
              name,
              "-o",
              'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}',
            ]);
            return out.startsWith("False/") ? out : undefined;
          }, 30_000);
          assert.equal(reason, "False/EdgeDeviceDisconnected");
          await session.closed;
          const ed = await getEd();
          assert.equal(ed.status.phase, "Disconnected");
          const cond = byType(ed.status.conditions);
          assert.equal(cond.Connected?.status, "False");
          assert.equal(cond.Connected?.reason, "EdgeDeviceDisconnected");
          assert.match(cond.Connected?.message ?? "", /^The link closed/);
          assert.equal(cond.NodeReady?.status, "False");
          assert.equal(cond.NodeReady?.reason, "EdgeDeviceDisconnected");
          assert.ok(Date.parse(ed.status.lastSeen) >= Date.parse(lastSeen));
          // The replica lets go of the device, so one the device dials next takes it at once.
          assert.equal(
            await cluster.kubectlOk([
              "get",
              "lease",
              "-n",
              "kube-node-lease",
              name,
              "-o",
              "jsonpath={.spec.holderIdentity}",
            ]),
            "",
          );
          assert.equal(await statusColumn(), "Disconnected");

          const pod = await getPod();
          assert.equal(pod.status.phase, "Running", "the phase stays, as for a lost kubelet");
          const pc = byType(pod.status.conditions);
          assert.equal(pc.Ready?.status, "False");
          assert.equal(pc.Ready?.reason, "EdgeDeviceDisconnected");
          assert.equal(pc.ContainersReady?.status, "False");
          assert.equal(pc.PodScheduled?.status, "True");
          assert.equal(pod.status.containerStatuses[0].ready, false);

          const disconnected = (await eventList()).find((e) => e.reason === "Disconnected");
          assert.ok(disconnected, "a Disconnected Event");
          assert.equal(disconnected.type, "Warning");
          assert.match(disconnected.message, /^The link closed/);
        },
      );
    } finally {
      await kill(arhat);
      ac.abort();
      await Promise.allSettled([...running, ...sessions.map((s) => s.run)]);
      await cluster.kubectl(["delete", "ed", name, "-n", ns, "--ignore-not-found", "--wait=false"]);
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl([
        "patch",
        "ed",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
      ]);
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await services.release();
      await cluster.release();
    }
  },
});

Deno.test({
  name:
    "an idle device is asked nothing after connect; a pushed change is written at once, an unchanged status only when due",
  // The API client's keep-alive connection outlives the test's steps; closed with the cluster.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const name = uniqueName("push");
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const custom = kc.custom;
    const coordination = kc.coordination;
    // The device: arhat's own node handler over an in-memory link, answering from `current`.
    const [cloud, device] = memoryLinkPair(`default/${name}`);
    let current = nodeMsg({ memoryPressure: false });
    const server = new SessionServer(device, {
      dispatcher: new Agent().register(
        nodeHandlers(() => Promise.resolve(toBinary(NodeStatusMsgSchema, current))),
      ),
    });
    server.start();
    const push = (msg: NodeStatusMsg) =>
      server.publish(MsgKind.MSG_NODE_STATUS, toBinary(NodeStatusMsgSchema, msg));
    const sent: string[] = [];
    const received: string[] = [];
    const session = new DeviceSession({
      link: cloud,
      lease: new NodeLease({
        coordination,
        core,
        node: name,
        membership: new StaticMembership("replica-a"),
      }),
      kubelet: { address: "127.0.0.1", port: 10266 },
      core,
      coordination,
      custom,
      heartbeatMs: 10_000,
      statusSyncMs: 60_000,
      // The EdgeDevice's timers win over the defaults above.
      timers: () => ({ heartbeatMs: 500, statusSyncMs: 4000 }),
      onMessage: (dir, kind) => (dir === "sent" ? sent : received).push(kind),
    });
    const nodeCondition = async (type: string) =>
      JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"])).status.conditions
        .find((c: Condition) => c.type === type);
    let run: Promise<void> | undefined;
    try {
      await cluster.kubectlOk(
        ["apply", "-f", "-"],
        JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name } }),
      );
      run = session.run();
      await session.connected;
      assert.deepEqual(sent, ["CMD_NODE_INFO_GET"], "one full sync on connect");
      assert.equal((await nodeCondition("MemoryPressure")).status, "False");

      await t.step("idle: Lease renewals only, nothing on the link", async () => {
        const before = { ...session.writeCounts };
        await sleep(2500);
        assert.deepEqual(sent, ["CMD_NODE_INFO_GET"], "nothing asked of the device");
        assert.deepEqual(received, ["MSG_NODE_STATUS"], "only the reply");
        assert.equal(session.writeCounts.node, before.node, "no Node status write");
        const leases = session.writeCounts.lease - before.lease;
        // Renewed; never more than one per heartbeat (a loaded machine may renew late).
        assert.ok(leases >= 1 && leases <= 6, `lease renewals at 500 ms: ${leases}`);
      });

      await t.step("a pushed change is written into the Node at once", async () => {
        const before = session.writeCounts.node;
        current = nodeMsg({ memoryPressure: true });
        await push(current);
        const c = await eventually("MemoryPressure=True", async () => {
          const c = await nodeCondition("MemoryPressure");
          return c.status === "True" ? c : undefined;
        }, 5000);
        assert.equal(c.reason, "ArhatHasInsufficientMemory");
        assert.equal(session.writeCounts.node, before + 1);
        assert.deepEqual(sent, ["CMD_NODE_INFO_GET"], "still nothing asked");
      });

      await t.step("a push that changes nothing the Node shows is not written", async () => {
        const before = session.writeCounts.node;
        await push(nodeMsg({ memoryPressure: true, message: "0.1 GiB of 8 GiB available" }));
        await sleep(500);
        assert.equal(session.writeCounts.node, before);
      });

      await t.step("the Node status is rewritten when due, from what is known", async () => {
        const hb1 = (await nodeCondition("Ready")).lastHeartbeatTime;
        const before = session.writeCounts.node;
        const hb2 = await eventually("a newer lastHeartbeatTime", async () => {
          const hb = (await nodeCondition("Ready")).lastHeartbeatTime;
          return hb !== hb1 ? hb : undefined;
        }, 8000);
        assert.ok(Date.parse(hb2) > Date.parse(hb1));
        assert.equal(session.writeCounts.node, before + 1, "one rewrite");
        const mp = await nodeCondition("MemoryPressure");
        assert.equal(mp.status, "True", "from the last push");
        assert.equal(mp.message, "0.1 GiB of 8 GiB available", "with its newest message");
        assert.deepEqual(sent, ["CMD_NODE_INFO_GET"], "without asking the device");
      });

      await t.step(
        "another replica took the device: the link closes and nothing more is written",
        async () => {
          // As a replica that found this one gone would: the Lease names it now.
          await cluster.kubectlOk([
            "patch",
            "lease",
            "-n",
            "kube-node-lease",
            name,
            "--type=merge",
            "-p",
            JSON.stringify({ spec: { holderIdentity: "replica-b" } }),
          ]);
          const info = await cloud.closed;
          assert.equal(info.by, "local");
          assert.match(info.reason, /Another aranya replica serves this device now/);
          const before = { ...session.writeCounts };
          await run;
          assert.deepEqual(session.writeCounts, before, "no disconnect writes, no release");
          assert.equal((await nodeCondition("Ready")).status, "True", "left to replica-b");
          const holder = await cluster.kubectlOk([
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            name,
            "-o",
            "jsonpath={.spec.holderIdentity}",
          ]);
          assert.equal(holder, "replica-b");
        },
      );
    } finally {
      cloud.close("test over");
      await run;
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl([
        "delete",
        "lease",
        "-n",
        "kube-node-lease",
        name,
        "--ignore-not-found",
      ]);
      await cluster.release();
    }
  },
});

Deno.test({
  name: "run(signal): aborting the signal closes the device's link and ends the session",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const name = uniqueName("stop");
    const kc = testClients(cluster.kubeconfig);
    const [cloud, device] = memoryLinkPair(`default/${name}`);
    new SessionServer(device, {
      dispatcher: new Agent().register(
        nodeHandlers(() =>
          Promise.resolve(toBinary(NodeStatusMsgSchema, nodeMsg({ memoryPressure: false })))
        ),
      ),
    }).start();
    const session = new DeviceSession({
      link: cloud,
      lease: new NodeLease({
        coordination: kc.coordination,
        core: kc.core,
        node: name,
        membership: new StaticMembership("replica-a"),
      }),
      kubelet: { address: "127.0.0.1", port: 10266 },
      core: kc.core,
      coordination: kc.coordination,
      custom: kc.custom,
    });
    const ac = new AbortController();
    try {
      await cluster.kubectlOk(
        ["apply", "-f", "-"],
        JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name } }),
      );
      const run = session.run(ac.signal);
      await session.connected;
      ac.abort();
      const info = await cloud.closed;
      assert.equal(info.by, "local");
      assert.match(info.reason, /stopping/);
      await run;
      assert.equal((await device.closed).by, "remote");
    } finally {
      ac.abort();
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl([
        "delete",
        "lease",
        "-n",
        "kube-node-lease",
        name,
        "--ignore-not-found",
      ]);
      await cluster.release();
    }
  },
});

/** A device's node status: Ready, and MemoryPressure as asked. */
function nodeMsg(o: { memoryPressure: boolean; message?: string }): NodeStatusMsg {
  return create(NodeStatusMsgSchema, {
    systemInfo: { os: "linux", arch: "amd64", agentVersion: "test" },
    capacity: { cpuMillis: 2000n, memoryBytes: 8n << 30n, pods: 10n },
    allocatable: { cpuMillis: 2000n, memoryBytes: 7n << 30n, pods: 10n },
    conditions: [
      { type: "Ready", status: NodeCondition_Status.HEALTHY, reason: "ArhatReady" },
      {
        type: "MemoryPressure",
        status: o.memoryPressure ? NodeCondition_Status.UNHEALTHY : NodeCondition_Status.HEALTHY,
        reason: o.memoryPressure ? "ArhatHasInsufficientMemory" : "ArhatHasSufficientMemory",
        message: o.message ?? "3 GiB of 8 GiB available",
      },
    ],
  });
}
