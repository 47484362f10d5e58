/**
 * aranya in-cluster, as shipped: deploy/aranya's Deployment (two active replicas), Service, RBAC,
 * admission policies and ConfigMap run on a real worker node (the pinned kubelet with containerd,
 * e2e/cluster/worker_node.ts), and a device outside the cluster (arhat on this host, on Podman)
 * reaches aranya through the Service, the way a user's device would.
 *
 * What is real: a control plane of its own serving on this host's address (pods reach the API
 * server at the "kubernetes" Service through kube-proxy, built from the pinned module), the
 * manifests as they are in deploy/ (read from the files; the one addition is the worker's
 * toleration and node selector, because the test's worker node is tainted so no other test's
 * pods land on it), the in-cluster ServiceAccount token, the read-only root file system and the
 * non-root user. What stands in: the container image. The shipped one (deploy/Dockerfile:
 * `deno compile` on distroless) cannot be built offline; e2e/in_cluster/standin_image.ts builds one
 * with the same name, user, entrypoint and command from the pinned deno and aranya's bundle.
 *
 * Checked: both replicas Ready (probes), each a membership member through the in-cluster
 * ServiceAccount, running as 65532 on a read-only root; the device's Node Ready through the
 * Service's ClusterIP; `kubectl logs`, `exec` and `port-forward` to an edge pod go API server ->
 * in-cluster aranya (the virtual Node's address is the replica's pod IP) -> device; SIGKILL of the
 * aranya process serving the device: the device dials again, the Node is Ready and exec works,
 * and the edge pod's container is the same one, never restarted.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { applyAranyaRbac, ARANYA_NAMESPACE, DEPLOY_DIR } from "../aranya_harness.ts";
import { type ArhatProc, kill, spawnArhat } from "../arhat_harness.ts";
import { type ControlPlane, startControlPlane } from "../cluster/control_plane.ts";
import { hostAddress } from "../cluster/host_address.ts";
import { type KubeProxy, startKubeProxy } from "../cluster/kube_proxy.ts";
import { issueLeaf } from "../cluster/pki.ts";
import {
  processes,
  startWorkerNode,
  WORKER_TOLERATION,
  type WorkerNode,
  workerSelector,
  workerSkipReason,
} from "../cluster/worker_node.ts";
import { kubectlPortForward } from "../kubectl_child.ts";
import { arhatDeviceYaml, waitDeviceToken, waitNodeReady } from "../edge_fixtures.ts";
import {
  applyCrds,
  type ClusterHandle,
  clusterHandle,
  eventually,
  type ServicesHandle,
  uniqueName,
  useServices,
} from "../fixtures.ts";
import { CACHE, ensureDir, removeAll } from "../paths.ts";
import { freePort, run, sleep } from "../process.ts";
import { EngineClient } from "../services/engine_client.ts";
import { NONROOT_UID, STANDIN_LIB, writeStandinImage } from "./standin_image.ts";

const skipReason = (await workerSkipReason()) ??
  (Deno.build.os === "linux" && !(await hostAddress().catch(() => undefined))
    ? "this machine has no default route, so no address pods could reach the API server at"
    : undefined);
if (skipReason) console.warn(`in-cluster aranya e2e skipped: ${skipReason}`);

const say = (line: string) => console.log(`[in-cluster] ${line}`);

/** deploy/aranya/deployment.yaml's documents as written, with the Deployment placed on the worker. */
async function shippedManifests(worker: WorkerNode): Promise<string> {
  const docs: unknown[] = [];
  const text = await Deno.readTextFile(`${DEPLOY_DIR}/deployment.yaml`);
  for (const d of parseAllDocuments(text)) {
    const obj = d.toJS() as {
      kind?: string;
      spec?: { template?: { spec?: Record<string, unknown> } };
    } | null;
    if (!obj) continue;
    if (obj.kind === "Deployment") {
      const pod = obj.spec!.template!.spec!;
      pod.tolerations = [...(pod.tolerations as unknown[] ?? []), WORKER_TOLERATION];
      pod.nodeSelector = { ...(pod.nodeSelector as object ?? {}), ...workerSelector(worker.id) };
    }
    docs.push(obj);
  }
  return docs.map((d) => JSON.stringify(d)).join("\n");
}

/** aranya's processes on this host (the containers' deno): host pid, user and identity. */
async function aranyaProcesses(): Promise<{ pid: number; uid: number; identity: string }[]> {
  const found = [];
  for (const p of await processes()) {
    if (!p.args.startsWith(`${STANDIN_LIB}/deno `)) continue;
    const uid = Number((await run("ps", ["-o", "uid=", "-p", String(p.pid)])).trim());
    found.push({ pid: p.pid, uid, identity: /--identity=(\S+)/.exec(p.args)?.[1] ?? "" });
  }
  return found;
}

/** The options of the root mount of process `pid` (from its mountinfo). */
async function rootMountOptions(pid: number): Promise<string[]> {
  // Through cat: Deno reads another process's /proc files only with --allow-all.
  const info = await run("cat", [`/proc/${pid}/mountinfo`]);
  for (const line of info.split("\n")) {
    const f = line.split(" ");
    if (f[4] === "/") return (f[5] ?? "").split(",");
  }
  throw new Error(`Process ${pid} has no root mount in its mountinfo`);
}

Deno.test({
  name:
    "e2e in-cluster: deploy/aranya runs on a real worker node (2 replicas, probes, non-root, read-only root); a device reaches it through the Service; logs, exec and port-forward go through it; SIGKILL of the serving replica: the device dials again, nothing restarts",
  ignore: skipReason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const dir = await ensureDir(`${CACHE}/in-cluster-e2e`);
    const arhatDir = await ensureDir(
      `${CACHE}/arhat-e2e/in-cluster-${crypto.randomUUID().slice(0, 8)}`,
    );
    let services: ServicesHandle | undefined;
    let cp: ControlPlane | undefined;
    let worker: WorkerNode | undefined;
    let proxy: KubeProxy | undefined;
    let arhat: ArhatProc | undefined;
    let cluster: ClusterHandle | undefined;
    const tenant = uniqueName("tenant");
    const device = uniqueName("dev");
    let engine: EngineClient | undefined;
    try {
      services = await useServices();
      engine = new EngineClient(services.endpoints.podmanSocket);
      const address = (await hostAddress())!;

      await t.step(
        "stand-in image, control plane on the host's address, worker node, kube-proxy",
        async () => {
          const image = await writeStandinImage(await ensureDir(`${dir}/image`));
          say(
            `stand-in image ${image.name}: ${
              ((await Deno.stat(image.archive)).size / 2 ** 20).toFixed(0)
            } MiB`,
          );
          cp = await startControlPlane({ dir: `${dir}/cluster`, address, log: say });
          cluster = clusterHandle(cp.kubeconfig, () => Promise.resolve());
          worker = await startWorkerNode({
            kubeconfig: cp.kubeconfig,
            ca: cp.pki.ca,
            images: [{ archive: image.archive, names: [image.name] }],
            log: say,
          });
          await removeAll(`${dir}/image`);
          proxy = await startKubeProxy({
            server: cp.server,
            ca: cp.pki.ca,
            nodeName: worker.nodeName,
            clusterCidr: "10.90.0.0/16",
            dir: `${dir}/kube-proxy`,
            log: say,
          });
          // The "kubernetes" Service's endpoint is the API server on the host's address.
          const ep = await eventually("the kubernetes Service's endpoint", async () => {
            const r = await cluster!.kubectl([
              "get",
              "endpointslices",
              "-n",
              "default",
              "-l",
              "kubernetes.io/service-name=kubernetes",
              "-o",
              "jsonpath={.items[0].endpoints[0].addresses[0]}",
            ]);
            return r.code === 0 && r.stdout ? r.stdout : undefined;
          });
          assert.equal(ep, address);
        },
      );

      const c = () => cluster!;
      let clusterIp = "";
      await t.step("deploy/aranya applied as shipped; both replicas Ready", async () => {
        await applyCrds(c());
        await applyAranyaRbac(c());
        await c().kubectlOk(["apply", "-f", `${DEPLOY_DIR}/service.yaml`]);
        clusterIp = (await c().kubectlOk([
          "get",
          "service",
          "-n",
          ARANYA_NAMESPACE,
          "aranya",
          "-o",
          "jsonpath={.spec.clusterIP}",
        ])).trim();
        // The serving certificate devices dial: the Service's address and names.
        const tls = await issueLeaf(`${dir}/cluster/run/pki`, cp!.pki.ca, {
          name: "aranya-link",
          subject: "/CN=aranya",
          usage: "server",
          sans: [
            `IP:${clusterIp}`,
            "DNS:aranya.aranya-system.svc",
            "DNS:aranya.aranya-system.svc.cluster.local",
          ],
        });
        await c().kubectlOk([
          "create",
          "secret",
          "tls",
          "aranya-tls",
          "-n",
          ARANYA_NAMESPACE,
          `--cert=${tls.cert}`,
          `--key=${tls.key}`,
        ]);
        await c().kubectlOk(["apply", "-f", "-"], await shippedManifests(worker!));
        const appliedAt = Date.now();
        const rollout = await c().kubectl([
          "rollout",
          "status",
          "deployment/aranya",
          "-n",
          ARANYA_NAMESPACE,
          "--timeout=240s",
        ]);
        if (rollout.code !== 0) {
          const pods = await c().kubectl(["get", "pods", "-n", ARANYA_NAMESPACE, "-o", "wide"]);
          const logs = await c().kubectl([
            "logs",
            "-n",
            ARANYA_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=aranya",
            "--tail=30",
          ]);
          throw new Error(
            `aranya's Deployment did not roll out: ${rollout.stderr}\n${pods.stdout}\n${logs.stdout}${logs.stderr}`,
          );
        }
        say(
          `both replicas Ready ${((Date.now() - appliedAt) / 1000).toFixed(1)} s after the apply`,
        );
        const pods = JSON.parse(
          await c().kubectlOk([
            "get",
            "pods",
            "-n",
            ARANYA_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=aranya",
            "-o",
            "json",
          ]),
        ).items as {
          metadata: { name: string };
          spec: { nodeName: string };
          status: { containerStatuses: { ready: boolean; restartCount: number }[] };
        }[];
        assert.equal(pods.length, 2, "two replicas");
        for (const p of pods) {
          assert.equal(p.spec.nodeName, worker!.nodeName);
          assert.ok(p.status.containerStatuses[0]!.ready, `${p.metadata.name} ready (its /readyz)`);
        }
        // Each replica talks to the API server with its ServiceAccount (in-cluster config through
        // the kubernetes Service): its membership Lease is there under its pod name.
        const leases = await eventually("both replicas' membership Leases", async () => {
          const out = await c().kubectlOk(["get", "leases", "-n", ARANYA_NAMESPACE, "-o", "name"]);
          return pods.every((p) =>
              out.includes(`lease.coordination.k8s.io/aranya-${p.metadata.name}`)
            )
            ? out
            : undefined;
        });
        say(`membership: ${leases.trim().split("\n").join(" ")}`);
        const procs = await aranyaProcesses();
        assert.equal(
          procs.length,
          2,
          `two aranya processes on the host (${JSON.stringify(procs)})`,
        );
        for (const p of procs) {
          assert.equal(p.uid, NONROOT_UID, `replica ${p.identity} runs as ${NONROOT_UID}`);
          assert.ok(
            (await rootMountOptions(p.pid)).includes("ro"),
            `${p.identity}: root is read-only`,
          );
          assert.ok(
            pods.some((x) => x.metadata.name === p.identity),
            `identity ${p.identity} is a pod name`,
          );
        }
      });

      let serving = "";
      await t.step("a device dials the Service; its Node is Ready", async () => {
        await c().kubectlOk(["create", "namespace", tenant]);
        await c().kubectlOk(
          ["apply", "-n", tenant, "-f", "-"],
          JSON.stringify({
            apiVersion: "aranya.arhat.dev/v1alpha1",
            kind: "EdgeDevice",
            metadata: { name: device },
            spec: {},
          }),
        );
        const token = await waitDeviceToken(c(), tenant, device);
        await Deno.writeTextFile(`${arhatDir}/token`, token);
        await Deno.copyFile(cp!.pki.ca.cert, `${arhatDir}/ca.crt`);
        const config = `${arhatDir}/arhat.yaml`;
        await Deno.writeTextFile(
          config,
          arhatDeviceYaml({
            namespace: tenant,
            name: device,
            stateDir: `${arhatDir}/state`,
            runtimeSocket: services!.endpoints.podmanSocket,
            image: services!.endpoints.testImage,
            methods: `    - method: websocket
      url: wss://${clusterIp}:8443/v1/link
      tokenFile: ${arhatDir}/token
      tls: { caFile: ${arhatDir}/ca.crt }
`,
          }),
        );
        arhat = spawnArhat(config);
        await waitNodeReady(c(), device, "True", 90_000);
        const node = JSON.parse(await c().kubectlOk(["get", "node", device, "-o", "json"]));
        const nodeIp = node.status.addresses.find((a: { type: string }) => a.type === "InternalIP")
          ?.address;
        const lease = JSON.parse(
          await c().kubectlOk(["get", "lease", "-n", "kube-node-lease", device, "-o", "json"]),
        );
        serving = lease.spec.holderIdentity;
        const servingIp = (await c().kubectlOk([
          "get",
          "pod",
          "-n",
          ARANYA_NAMESPACE,
          serving,
          "-o",
          "jsonpath={.status.podIP}",
        ])).trim();
        assert.equal(nodeIp, servingIp, "the Node's address is the serving replica's pod IP");
        say(`device ${tenant}/${device} served by ${serving} (${servingIp})`);
      });

      let containerId = "";
      /** `kubectl exec` of `cat` in the edge pod: API server -> in-cluster aranya -> device. */
      const catIndex = () =>
        c().kubectl(["exec", "-n", tenant, "web", "--", "cat", "/www/index.html"]);
      await t.step(
        "kubectl logs, exec and port-forward to an edge pod go through in-cluster aranya",
        async () => {
          await c().kubectlOk(
            ["apply", "-n", tenant, "-f", "-"],
            JSON.stringify({
              apiVersion: "v1",
              kind: "Pod",
              metadata: { name: "web" },
              spec: {
                nodeSelector: { "arhat.dev/name": device },
                tolerations: [{
                  key: "arhat.dev/namespace",
                  operator: "Exists",
                  effect: "NoSchedule",
                }],
                containers: [{
                  name: "web",
                  image: services!.endpoints.testImage,
                  imagePullPolicy: "IfNotPresent",
                  command: [
                    "sh",
                    "-c",
                    "echo edge-log-line; mkdir -p /www; echo forwarded-ok > /www/index.html; " +
                    "exec httpd -f -p 8080 -h /www",
                  ],
                }],
              },
            }),
          );
          await c().kubectlOk([
            "wait",
            "-n",
            tenant,
            "--for=condition=Ready",
            "pod/web",
            "--timeout=120s",
          ]);
          const logs = await eventually("the edge pod's log", async () => {
            const r = await c().kubectl(["logs", "-n", tenant, "web"]);
            return r.code === 0 && r.stdout.includes("edge-log-line") ? r.stdout : undefined;
          });
          assert.match(logs, /edge-log-line/);
          const exec = await catIndex();
          assert.equal(exec.code, 0, exec.stderr);
          assert.equal(exec.stdout.trim(), "forwarded-ok");
          const pf = await kubectlPortForward(
            { kubeconfig: c().kubeconfig, namespace: tenant },
            "pod/web",
            freePort(),
            8080,
          );
          try {
            const res = await fetch(`http://127.0.0.1:${pf.localPort}/index.html`);
            assert.equal((await res.text()).trim(), "forwarded-ok");
          } finally {
            await pf.stop();
          }
          containerId = JSON.parse(
            await c().kubectlOk(["get", "pod", "-n", tenant, "web", "-o", "json"]),
          ).status.containerStatuses[0].containerID;
          assert.ok(containerId, "the edge container has an id");
        },
      );

      await t.step(
        "SIGKILL of the serving replica: the device dials again, nothing restarts",
        async () => {
          const proc = (await aranyaProcesses()).find((p) => p.identity === serving);
          assert.ok(proc, `the process of replica ${serving}`);
          const connectsBefore = (arhat!.output().match(/connected to aranya/g) ?? []).length;
          await run("kill", ["-KILL", String(proc.pid)]);
          const killedAt = Date.now();
          const since = () => `${((Date.now() - killedAt) / 1000).toFixed(1)} s`;
          await eventually("arhat connected again", () => {
            const n = (arhat!.output().match(/connected to aranya/g) ?? []).length;
            return Promise.resolve(n > connectsBefore ? n : undefined);
          }, 120_000);
          say(`the device's link is up again ${since()} after the kill`);
          await waitNodeReady(c(), device, "True", 120_000);
          say(`its Node is Ready ${since()} after the kill`);
          const exec = await eventually("exec through aranya after the kill", async () => {
            const r = await catIndex();
            return r.code === 0 ? r.stdout : undefined;
          }, 120_000);
          assert.equal(exec.trim(), "forwarded-ok");
          const holder = JSON.parse(
            await c().kubectlOk(["get", "lease", "-n", "kube-node-lease", device, "-o", "json"]),
          ).spec.holderIdentity;
          say(
            `after SIGKILL of ${serving}: the device is served by ${holder}, exec works ${since()} after the kill`,
          );
          const status = JSON.parse(
            await c().kubectlOk(["get", "pod", "-n", tenant, "web", "-o", "json"]),
          ).status.containerStatuses[0];
          assert.equal(status.containerID, containerId, "the same container");
          assert.equal(status.restartCount, 0, "never restarted");
        },
      );
    } catch (err) {
      if (arhat) console.error(`arhat:\n${arhat.output().slice(-3000)}`);
      if (cluster) {
        const r = await cluster.kubectl([
          "logs",
          "-n",
          ARANYA_NAMESPACE,
          "-l",
          "app.kubernetes.io/name=aranya",
          "--tail=40",
          "--prefix",
        ]);
        console.error(`aranya:\n${r.stdout}${r.stderr}`);
      }
      throw err;
    } finally {
      if (cluster) {
        // While aranya still runs: it stops the edge pods and removes the EdgeDevice's finalizers.
        await cluster.kubectl([
          "delete",
          "namespace",
          tenant,
          "--ignore-not-found",
          "--wait=false",
        ]);
        await cluster.kubectl(["wait", "--for=delete", `namespace/${tenant}`, "--timeout=30s"]);
      }
      await kill(arhat);
      await engine?.removeContainers({ "arhat.dev/pod-namespace": tenant }).catch(() => 0);
      engine?.close();
      await proxy?.stop();
      await worker?.stop();
      await cp?.stop();
      await services?.release();
      await removeAll(arhatDir);
      await sleep(0);
    }
  },
});
