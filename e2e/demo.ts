/**
 * `deno task demo`: the whole system on this machine, left running.
 *
 * 1. the local control plane and the services (Podman among them);
 * 2. the EdgeDevice CRD and aranya's namespace + RBAC from deploy/;
 * 3. aranya (aranya/main.ts) with a token of its own ServiceAccount (not
 *    admin), a websocket device listener on 127.0.0.1 with a local CA;
 * 4. EdgeDevice `edge/demo-device`, and arhat on Podman as that device, with
 *    the token from the device's credentials Secret;
 * 5. once the Node is Ready, the sample workload (deploy/samples/workload.yaml)
 *    runs on it.
 *
 * Everything runs detached; `deno task demo:down` stops it all.
 */
import { binPath, ensureBuilt } from "./cluster/build.ts";
import {
  DEFAULT_CLUSTER_DIR,
  startControlPlane,
  stopControlPlane,
} from "./cluster/control_plane.ts";
import { aranyaArgs, aranyaConfigYaml, aranyaKubeconfig } from "./aranya_harness.ts";
import { applyCrds, clusterHandle } from "./fixtures.ts";
import { testTls } from "./link/test_tls.ts";
import { CACHE, ROOT } from "./paths.ts";
import { freePort, startService, stopFromPidFile, tailLog, waitReady } from "./process.ts";
import { sampleWorkload } from "./samples.ts";
import {
  arhatDeviceYaml,
  waitDeviceToken,
  waitNodeReady,
  websocketMethod,
} from "./edge_fixtures.ts";
import { EngineClient } from "./services/engine_client.ts";
import { PODMAN_SOCKET } from "./services/podman.ts";
import { startServices, stopLeftoverServices } from "./services/mod.ts";

const say = (line: string) => console.error(`[demo] ${line}`);
const NS = "edge";
const DEVICE = "demo-device";
/** aranya's files (its permission set reads .cache/aranya-e2e). */
const ARANYA_DIR = `${CACHE}/aranya-e2e/demo`;
/** arhat's files (its permission set reads and writes .cache/arhat-e2e). */
const ARHAT_DIR = `${CACHE}/arhat-e2e/demo`;

async function up(): Promise<void> {
  await down(false);
  await ensureBuilt(say);
  const cp = await startControlPlane({ detached: true, log: say });
  const cluster = clusterHandle(cp.kubeconfig, () => Promise.resolve());
  const services = await startServices({ detached: true, log: say });
  say("applying the EdgeDevice CRD and aranya's RBAC (deploy/)");
  await applyCrds(cluster);
  await Deno.mkdir(ARANYA_DIR, { recursive: true });
  await Deno.mkdir(ARHAT_DIR, { recursive: true });
  const kubeconfig = await aranyaKubeconfig(cluster, ARANYA_DIR);
  const tls = await testTls();
  await Deno.writeTextFile(`${ARANYA_DIR}/tls.crt`, tls.cert);
  await Deno.writeTextFile(`${ARANYA_DIR}/tls.key`, tls.key);
  await Deno.writeTextFile(`${ARHAT_DIR}/ca.crt`, tls.ca);
  const port = freePort();
  const httpPort = freePort();
  await Deno.writeTextFile(
    `${ARANYA_DIR}/config.yaml`,
    aranyaConfigYaml({
      kubeconfig,
      namespaces: [],
      httpPort,
      websocket: { port, certFile: `${ARANYA_DIR}/tls.crt`, keyFile: `${ARANYA_DIR}/tls.key` },
    }),
  );
  say(
    `starting aranya (device link wss://127.0.0.1:${port}/v1/link, ops http://127.0.0.1:${httpPort})`,
  );
  const aranya = await startService({
    name: "aranya",
    cmd: "deno",
    args: aranyaArgs(`${ARANYA_DIR}/config.yaml`),
    logFile: `${ARANYA_DIR}/aranya.log`,
    pidFile: `${ARANYA_DIR}/aranya.pid`,
    detached: true,
  });
  await waitReady(aranya, async () => {
    const r = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
    await r?.body?.cancel();
    return r?.status === 200;
  }, 60_000);

  say(`creating EdgeDevice "${NS}/${DEVICE}"`);
  await cluster.kubectl(["create", "namespace", NS]);
  await cluster.kubectlOk(
    ["apply", "-n", NS, "-f", "-"],
    JSON.stringify({
      apiVersion: "aranya.arhat.dev/v1alpha1",
      kind: "EdgeDevice",
      metadata: { name: DEVICE },
      spec: {
        connectivity: { method: "websocket" },
        node: { labels: { "example.com/site": "demo" } },
      },
    }),
  );
  const token = await waitDeviceToken(cluster, NS, DEVICE);
  await Deno.writeTextFile(`${ARHAT_DIR}/token`, token);
  await Deno.writeTextFile(
    `${ARHAT_DIR}/config.yaml`,
    arhatDeviceYaml({
      namespace: NS,
      name: DEVICE,
      stateDir: `${ARHAT_DIR}/state`,
      runtimeSocket: services.endpoints.podmanSocket,
      image: services.endpoints.testImage,
      methods: websocketMethod(port, `${ARHAT_DIR}/token`, `${ARHAT_DIR}/ca.crt`),
      allowHost: true,
    }),
  );
  say("starting arhat on Podman as the device");
  await startService({
    name: "arhat",
    cmd: "deno",
    args: [
      "run",
      `--config=${ROOT}/deno.json`,
      "-P=arhat",
      "--no-prompt",
      `${ROOT}/arhat/main.ts`,
      "-c",
      `${ARHAT_DIR}/config.yaml`,
    ],
    logFile: `${ARHAT_DIR}/arhat.log`,
    pidFile: `${ARHAT_DIR}/arhat.pid`,
    detached: true,
  });
  try {
    await waitNodeReady(cluster, DEVICE, "True", 90_000);
    say("the edge node is Ready; applying the sample workload");
    await cluster.kubectlOk(
      ["apply", "-n", NS, "-f", "-"],
      await sampleWorkload(DEVICE, services.endpoints.testImage),
    );
    await cluster.kubectlOk([
      "wait",
      "-n",
      NS,
      "--for=condition=Ready",
      "pod",
      "-l",
      "app=edge-demo",
      "--timeout=120s",
    ]);
  } catch (err) {
    say(`aranya log:\n${await tailLog(`${ARANYA_DIR}/aranya.log`, 20)}`);
    say(`arhat log:\n${await tailLog(`${ARHAT_DIR}/arhat.log`, 20)}`);
    throw err;
  }
  const k = `${binPath("kubectl")} --kubeconfig=${cp.kubeconfig}`;
  const nodes = await cluster.kubectlOk(["get", "nodes", "-o", "wide"]);
  const eds = await cluster.kubectlOk(["get", "ed", "-n", NS]);
  const pods = await cluster.kubectlOk(["get", "pods", "-n", NS, "-o", "wide"]);
  console.log(`
Kubernetes ${cp.version} control plane at ${cp.server}; aranya and arhat (on Podman) are running.

${nodes}
${eds}
${pods}
Try:
  ${k} get ed -n ${NS} -o wide
  ${k} describe node ${DEVICE}
  ${k} get events -n ${NS}
  ${k} logs -n ${NS} deploy/edge-demo
  ${k} exec -n ${NS} deploy/edge-demo -- cat /etc/edge-demo/app.conf   # through aranya's kubelet API
  curl -s http://127.0.0.1:${httpPort}/metrics | grep ^aranya_
  ${k} delete pod -n ${NS} -l app=edge-demo        # the Deployment's new pod runs on the device

Logs: ${ARANYA_DIR}/aranya.log, ${ARHAT_DIR}/arhat.log
Stop everything with: deno task demo:down
`);
}

/** Stops the demo's aranya and arhat, the services and the control plane. */
async function down(all = true): Promise<void> {
  await stopFromPidFile(`${ARHAT_DIR}/arhat.pid`, "arhat/main.ts");
  await stopFromPidFile(`${ARANYA_DIR}/aranya.pid`, "aranya/main.ts");
  if (!all) return;
  // arhat leaves its pods running when it stops (offline autonomy): remove the demo's containers
  // while the Podman service still answers.
  const podman = new EngineClient(PODMAN_SOCKET);
  try {
    await podman.removeContainers({ "arhat.dev/managed": "true" });
  } catch { /* Podman is not running: nothing to remove */ }
  podman.close();
  await stopLeftoverServices();
  await stopControlPlane(DEFAULT_CLUSTER_DIR);
  say("stopped aranya, arhat, the services and the control plane");
}

if (import.meta.main) {
  try {
    if (Deno.args[0] === "down") await down();
    else await up();
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
}
