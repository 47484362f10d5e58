/**
 * Pods to a real device and back, with aranya's parts in this process (the
 * same parts aranya/main.ts wires; e2e/edge_e2e_test.ts runs the real aranya
 * process with the RBAC from deploy/): the sample workload from
 * deploy/samples/workload.yaml runs on arhat (Podman) with env from a Secret
 * and a ConfigMap, a ConfigMap volume and the kube-api-access volume, checked
 * inside the container; its status is written back; a pod that cannot be
 * resolved reports CreateContainerConfigError naming the field; after a link
 * cut the device keeps running, a pod force-deleted meanwhile is removed on
 * reconnect, and the others are not restarted; a deleted Deployment's pod is
 * stopped on the device and then removed.
 */
import assert from "node:assert/strict";
import { MemoryLinkRegistry } from "../connectivity/link_registry.ts";
import { SecretAuthenticator } from "../connectivity/secret_authenticator.ts";
import { WebSocketLinkServer } from "../connectivity/websocket/ws_link_server.ts";
import { EdgeDeviceController } from "../edgedevice/controller.ts";
import {
  arhatDeviceYaml,
  waitDeviceToken,
  waitNodeReady,
  websocketMethod,
} from "@aranya/e2e/edge_fixtures";
import { applyCrds, eventually, uniqueName, useCluster, useServices } from "@aranya/e2e/fixtures";
import { testTls } from "@aranya/e2e/link/test_tls";
import { ROOT } from "@aranya/e2e/paths";
import { freePort } from "@aranya/e2e/process";
import { type ArhatProc, kill, spawnArhat } from "@aranya/e2e/arhat_harness";
import { EngineClient } from "@aranya/e2e/services/engine_client";
import { sampleWorkload } from "@aranya/e2e/samples";
import { createLogger } from "@aranya/common/log";
import { onlyReplicaSession } from "./testing/only_replica_session.ts";
import { PodController } from "./pod_controller.ts";
import { testClients } from "../kube/testing/test_clients.ts";

Deno.test({
  name: "pods run on the device with resolved env and volumes, and report back",
  // Informers, the websocket server and arhat outlive steps; all stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const services = await useServices();
    const ns = uniqueName("pods");
    const name = uniqueName("dev");
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const custom = kc.custom;
    const coordination = kc.coordination;
    const engine = new EngineClient(services.endpoints.podmanSocket);
    const ac = new AbortController();
    const tls = await testTls();
    const port = freePort();
    const sessions: Promise<void>[] = [];
    const controller = new EdgeDeviceController({
      http: kc.http,
      core,
      custom,
      coordination,
      namespaces: [ns],
    });
    const podLog: string[] = [];
    const pods = new PodController({
      http: kc.http,
      core,
      directory: controller,
      namespaces: [ns],
      kubeletAddress: "127.0.0.1",
      log: createLogger({ level: "debug", sink: (line) => podLog.push(line) }),
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
    let arhat: ArhatProc | undefined;
    const running: Promise<void>[] = [];
    const kubectlJson = async (args: string[]) =>
      JSON.parse(await cluster.kubectlOk([...args, "-n", ns, "-o", "json"]));
    const appContainers = (uid: string) =>
      engine.containers({ "arhat.dev/pod-uid": uid, "arhat.dev/role": "app" });
    try {
      await applyCrds(cluster);
      await cluster.kubectlOk(["create", "namespace", ns]);
      running.push(controller.run(ac.signal), pods.run(ac.signal));
      running.push(server.run(ac.signal, (link) => {
        const session = onlyReplicaSession(link, { core, coordination, custom });
        sessions.push(session.run());
        pods.attach({
          device: link.device,
          node: session.node,
          client: session.client,
          closed: link.closed,
        });
      }));
      await Promise.all([controller.ready, server.ready, pods.ready]);
      assert.equal(pods.watches, 2, "one pod watch and one Namespace watch for all devices");
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "aranya.arhat.dev/v1alpha1",
          kind: "EdgeDevice",
          metadata: { name },
          // ClusterFirst on this device: its cluster DNS.
          spec: { pod: { dns: { servers: ["10.53.0.10"], searches: ["svc.edge.test"] } } },
        }),
      );
      const token = await waitDeviceToken(cluster, ns, name);
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
      await waitNodeReady(cluster, name, "True", 60_000);

      // The sample workload, scheduled by the real scheduler onto the edge node.
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        await sampleWorkload(name, services.endpoints.testImage),
      );
      const pod = await eventually("the sample pod to run", async () => {
        const list = await kubectlJson(["get", "pods", "-l", "app=edge-demo"]);
        const p = list.items[0];
        return p?.status?.phase === "Running" && p.status.containerStatuses?.[0]?.ready
          ? p
          : undefined;
      }, 90_000);
      assert.equal(pod.spec.nodeName, name);
      assert.equal(pod.status.hostIP, "127.0.0.1");
      assert.match(pod.status.containerStatuses[0].containerID, /^podman:\/\/[0-9a-f]+$/);
      assert.ok(pod.status.containerStatuses[0].imageID, "image ID reported");
      assert.ok(pod.status.startTime, "start time reported");
      const ready = pod.status.conditions.find((c: { type: string }) => c.type === "Ready");
      assert.equal(ready.status, "True");
      const [ctr] = await appContainers(pod.metadata.uid);
      assert.ok(ctr, "the app container exists on the device");
      const env = await eventually("env.txt inside the container", async () => {
        try {
          return await engine.readFile(ctr.Id, "/tmp/env.txt");
        } catch {
          return undefined;
        }
      });
      assert.match(env, /^API_KEY=demo-api-key-123$/m, "env from the Secret");
      assert.match(env, /^SITE=lab-1$/m, "env from the ConfigMap");
      assert.match(env, new RegExp(`^POD_NAME=${pod.metadata.name}$`, "m"), "env from a fieldRef");
      assert.equal(
        await engine.readFile(ctr.Id, "/etc/edge-demo/app.conf"),
        "interval=5s\ntarget=sensor-0\n",
        "the ConfigMap volume",
      );
      assert.equal(
        await engine.readFile(ctr.Id, "/etc/resolv.conf"),
        "nameserver 10.53.0.10\nsearch svc.edge.test\n",
        "the EdgeDevice's spec.pod.dns for dnsPolicy ClusterFirst",
      );
      const sa = "/var/run/secrets/kubernetes.io/serviceaccount";
      assert.equal(await engine.readFile(ctr.Id, `${sa}/namespace`), ns);
      assert.match(await engine.readFile(ctr.Id, `${sa}/token`), /^ey[\w-]+\.[\w-]+\.[\w-]+$/);
      assert.match(await engine.readFile(ctr.Id, `${sa}/ca.crt`), /BEGIN CERTIFICATE/);

      // A pod whose Secret does not exist: the kubelet's CreateContainerConfigError, field named.
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "broken" },
          spec: {
            nodeName: name,
            containers: [{
              name: "c",
              image: services.endpoints.testImage,
              env: [{ name: "X", valueFrom: { secretKeyRef: { name: "missing", key: "k" } } }],
            }],
          },
        }),
      );
      const waiting = await eventually("CreateContainerConfigError", async () => {
        const p = await kubectlJson(["get", "pod", "broken"]);
        const w = p.status?.containerStatuses?.[0]?.state?.waiting;
        return w?.reason === "CreateContainerConfigError" ? w : undefined;
      });
      assert.match(
        waiting.message,
        /spec\.containers\[0\]\.env\[0\]\.valueFrom\.secretKeyRef: Secret ".*\/missing" not found/,
      );

      // A second pod bound directly, to be force-deleted while the device is away.
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "solo" },
          spec: {
            nodeName: name,
            terminationGracePeriodSeconds: 1,
            containers: [{
              name: "c",
              image: services.endpoints.testImage,
              command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
            }],
          },
        }),
      );
      const solo = await eventually("solo to run", async () => {
        const p = await kubectlJson(["get", "pod", "solo"]);
        return p.status?.phase === "Running" ? p : undefined;
      }, 60_000);

      // Link cut: the device keeps its containers; the Node goes NotReady.
      await kill(arhat, "SIGKILL");
      await eventually("the Node NotReady", async () => {
        const out = await cluster.kubectlOk([
          "get",
          "node",
          name,
          "-o",
          'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        ]);
        return out !== "True" ? true : undefined;
      }, 30_000);
      assert.equal((await appContainers(pod.metadata.uid))[0]?.State, "running");
      await cluster.kubectlOk(["delete", "pod", "solo", "-n", ns, "--grace-period=0", "--force"]);

      // Link back: the orphan goes, the sample pod is not restarted.
      arhat = spawnArhat(`${base}/config.yaml`);
      await eventually("solo's containers removed on the device", async () => {
        const left = await engine.containers({ "arhat.dev/pod-uid": solo.metadata.uid });
        return left.length === 0 ? true : undefined;
      }, 60_000);
      await waitNodeReady(cluster, name, "True", 60_000);
      const after = await appContainers(pod.metadata.uid);
      assert.deepEqual(after.map((c) => c.Id), [ctr.Id], "same container, not recreated");
      const again = await kubectlJson(["get", "pod", pod.metadata.name]);
      assert.equal(again.status.containerStatuses[0].restartCount, 0);

      // Deleting the Deployment: the pod is stopped on the device, then removed.
      await cluster.kubectlOk(["delete", "deployment", "edge-demo", "-n", ns, "--wait=false"]);
      await eventually("the sample pod gone from the API", async () => {
        const r = await cluster.kubectl(["get", "pod", pod.metadata.name, "-n", ns]);
        return r.code !== 0 && /NotFound/.test(r.stderr) ? true : undefined;
      }, 60_000);
      assert.deepEqual(await appContainers(pod.metadata.uid), [], "containers gone");
    } catch (err) {
      console.error(arhat?.output().slice(-4000));
      console.error(podLog.slice(-40).join("\n"));
      throw err;
    } finally {
      await kill(arhat);
      ac.abort();
      await Promise.allSettled([...running, ...sessions]);
      // arhat keeps pods running when it stops (offline autonomy): remove this test's containers.
      for (const c of await engine.containers({ "arhat.dev/pod-namespace": ns }).catch(() => [])) {
        await (await engine.request("DELETE", `/containers/${c.Id}?force=true`)).body?.cancel();
      }
      engine.close();
      await cluster.kubectl(["delete", "ed", name, "-n", ns, "--ignore-not-found", "--wait=false"]);
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await services.release();
      await cluster.release();
    }
  },
});
