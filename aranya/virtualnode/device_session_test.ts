/**
 * A real arhat (on Podman) connects to aranya's websocket listener with the
 * token from the Secret the EdgeDevice controller made; its Node turns Ready
 * with the device's node info and its Lease is renewed; when arhat dies the
 * Node goes Ready=False with reason EdgeDeviceDisconnected.
 */
import assert from "node:assert/strict";
import {
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
} from "@kubernetes/client-node";
import { MemoryLinkRegistry } from "../connectivity/registry.ts";
import { SecretAuthenticator } from "../connectivity/secret_authenticator.ts";
import { WebSocketLinkServer } from "../connectivity/websocket/ws_link_server.ts";
import { EdgeDeviceController } from "../edgedevice/controller.ts";
import { credentialsSecretName } from "../edgedevice/types.ts";
import { applyCrds, eventually, uniqueName, useCluster, useServices } from "../../e2e/fixtures.ts";
import { testTls } from "../../e2e/link/test_tls.ts";
import { ROOT } from "../../e2e/paths.ts";
import { freePort } from "../../e2e/process.ts";
import { kill, spawnArhat } from "../../e2e/arhat_harness.ts";
import { DeviceSession } from "./device_session.ts";

Deno.test({
  name: "a connected device makes its Node Ready; a lost link makes it NotReady",
  // Informer watch, websocket server and the arhat child outlive steps; all stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const services = await useServices();
    const ns = uniqueName("vn");
    const name = uniqueName("dev");
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const coordination = kc.makeApiClient(CoordinationV1Api);
    const ac = new AbortController();
    const tls = await testTls();
    const port = freePort();
    const sessions: Promise<void>[] = [];
    const controller = new EdgeDeviceController({
      kubeconfig: kc,
      core,
      custom,
      kubeletAddress: "127.0.0.1",
      kubeletPort: 10250,
    });
    const server = new WebSocketLinkServer({
      hostname: "127.0.0.1",
      port,
      tls: { cert: tls.cert, key: tls.key },
      authenticator: new SecretAuthenticator({ core, cacheMs: 0 }),
      registry: new MemoryLinkRegistry(),
    });
    const base = `${ROOT}/.cache/arhat-e2e/${crypto.randomUUID().slice(0, 8)}`;
    let arhat: ReturnType<typeof spawnArhat> | undefined;
    const running: Promise<void>[] = [];
    try {
      await applyCrds(cluster);
      await cluster.kubectlOk(["create", "namespace", ns]);
      running.push(controller.run(ac.signal));
      running.push(server.run(ac.signal, (link) => {
        sessions.push(new DeviceSession({ link, core, coordination, heartbeatMs: 1000 }).run());
      }));
      await Promise.all([controller.ready, server.ready]);
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "aranya.arhat.dev/v1alpha1",
          kind: "EdgeDevice",
          metadata: { name },
        }),
      );
      const token = atob(
        await eventually("the credentials Secret", async () => {
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
        }),
      );
      await Deno.mkdir(base, { recursive: true });
      await Deno.writeTextFile(`${base}/ca.crt`, tls.ca);
      await Deno.writeTextFile(`${base}/token`, token);
      await Deno.writeTextFile(
        `${base}/config.yaml`,
        `device: { namespace: ${ns}, name: ${name} }
stateDir: ${base}/state
runtime: { endpoint: unix://${services.endpoints.podmanSocket}, infraImage: ${services.endpoints.testImage} }
connectivity:
  backoff: { initialDelay: 200ms, maxDelay: 1s, factor: 1.5 }
  methods:
    - method: websocket
      url: wss://localhost:${port}/v1/link
      tokenFile: ${base}/token
      tls: { caFile: ${base}/ca.crt }
`,
      );
      arhat = spawnArhat(`${base}/config.yaml`);
      const node = await eventually("the Node to be Ready", async () => {
        const n = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
        const ready = n.status?.conditions?.find((c: { type: string }) => c.type === "Ready");
        return ready?.status === "True" ? n : undefined;
      }, 60_000);
      assert.equal(node.status.nodeInfo.operatingSystem, "linux");
      assert.equal(node.status.nodeInfo.architecture, "amd64");
      assert.match(node.status.nodeInfo.containerRuntimeVersion, /^podman:\/\//);
      assert.ok(Number(node.status.capacity.pods) > 0);
      const renew1 = await cluster.kubectlOk([
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        name,
        "-o",
        "jsonpath={.spec.renewTime}",
      ]);
      await new Promise((r) => setTimeout(r, 2500));
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

      await kill(arhat, "SIGKILL");
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
    } finally {
      await kill(arhat);
      ac.abort();
      await Promise.allSettled([...running, ...sessions]);
      await cluster.kubectl(["delete", "ed", name, "-n", ns, "--ignore-not-found", "--wait=false"]);
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await services.release();
      await cluster.release();
    }
  },
});
