/**
 * Pods behave like Kubernetes pods on an edge device, end to end: the real
 * control plane and scheduler, the real aranya process (deploy/ RBAC and
 * admission policies, pods.syncInterval 2s) and a real arhat on Podman.
 *
 * - tenancy opt-ins of a cluster admin: an EdgeDevice with
 *   spec.node.namespaceTaint false (its Node has no namespace taint) and
 *   spec.pod.allowedNamespaceSelector; a pod of a namespace with the label,
 *   without any toleration, is placed there by the scheduler and runs; a pod
 *   of an unlabelled namespace bound to the Node is refused;
 * - ConfigMap, Secret and downward API (labels) volumes change inside the
 *   running container (read with `kubectl exec cat`), with the same container
 *   and no restart; the service account token stays the same (cached);
 * - activeDeadlineSeconds: the pod is stopped on the device and Failed with
 *   reason DeadlineExceeded.
 *
 * Token refresh at 80% of its lifetime needs a clock that can be moved:
 * aranya/virtualnode/pod_refresh_test.ts (real API server, fake device).
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { websocketMethod } from "./edge_fixtures.ts";
import { eventually, uniqueName } from "./fixtures.ts";
import { freePort } from "./process.ts";
import { advertisedAddress } from "./kubelet_fixtures.ts";
import { inWorld, TEST } from "./edge_world.ts";

const SA = "/var/run/secrets/kubernetes.io/serviceaccount";

Deno.test({
  name:
    "e2e pods: volumes follow their sources in a running container, activeDeadlineSeconds, namespace selector and no namespace taint",
  ...TEST,
  fn: () =>
    inWorld(async (w, cluster, services) => {
      const guest = uniqueName("guest");
      const stranger = uniqueName("stranger");
      const label = `aranya-e2e/devices-of-${w.ns}`;
      const inGuest = (args: string[], stdin?: string) =>
        cluster.kubectlOk(["-n", guest, ...args], stdin);
      const guestPod = async (name: string) =>
        JSON.parse(await inGuest(["get", "pod", name, "-o", "json"]));
      try {
        await cluster.kubectlOk(["create", "namespace", guest]);
        await cluster.kubectlOk(["label", "namespace", guest, `${label}=yes`]);
        await cluster.kubectlOk(["create", "namespace", stranger]);
        const port = freePort();
        const httpPort = freePort();
        const aranya = await w.startAranya(aranyaConfigYaml({
          kubeconfig: w.kubeconfig,
          namespaces: [w.ns, guest, stranger],
          httpPort,
          websocket: { port, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
          kubelet: { address: advertisedAddress(), port: freePort(), portCount: 4 },
          node: { heartbeat: "1s", leaseDuration: "10s" },
          pods: { syncInterval: "2s" },
        }));
        await waitAranyaReady(aranya, httpPort);
        const dev = uniqueName("dev");
        // As a cluster admin (the test's kubectl): the admission policy allows both opt-ins.
        const token = await w.createDevice(dev, {
          node: { namespaceTaint: false },
          pod: { allowedNamespaceSelector: { matchLabels: { [label]: "yes" } } },
        });
        await w.startArhat(dev, websocketMethod(port, token, `${w.arhatDir}/ca.crt`));
        await w.nodeReady(dev, "True");
        const node = JSON.parse(await cluster.kubectlOk(["get", "node", dev, "-o", "json"]));
        assert.deepEqual(
          (node.spec.taints ?? []).filter((t: { key: string }) => t.key === "arhat.dev/namespace"),
          [],
          "no namespace taint",
        );

        // A pod of the labelled namespace, no toleration: the scheduler places it on the device.
        await inGuest(
          ["apply", "-f", "-"],
          [
            { kind: "ConfigMap", metadata: { name: "cfg" }, data: { "app.conf": "v1" } },
            { kind: "Secret", metadata: { name: "creds" }, stringData: { password: "p1" } },
            {
              kind: "Pod",
              metadata: { name: "app", labels: { app: "app" } },
              spec: {
                nodeSelector: { "arhat.dev/name": dev },
                terminationGracePeriodSeconds: 1,
                containers: [{
                  name: "main",
                  image: services.endpoints.testImage,
                  command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                  volumeMounts: [
                    { name: "cfg", mountPath: "/cfg" },
                    { name: "creds", mountPath: "/creds" },
                    { name: "info", mountPath: "/info" },
                  ],
                }],
                volumes: [
                  { name: "cfg", configMap: { name: "cfg" } },
                  { name: "creds", secret: { secretName: "creds" } },
                  {
                    name: "info",
                    downwardAPI: {
                      items: [{ path: "labels", fieldRef: { fieldPath: "metadata.labels" } }],
                    },
                  },
                ],
              },
            },
          ].map((o) => JSON.stringify({ apiVersion: "v1", ...o })).join("\n---\n"),
        );
        const pod = await eventually("the guest pod Running on the device", async () => {
          const p = await guestPod("app");
          return p.status?.phase === "Running" && p.status.containerStatuses?.[0]?.ready
            ? p
            : undefined;
        }, 90_000);
        assert.equal(pod.spec.nodeName, dev, "scheduled onto the device without a toleration");
        const [ctr] = await w.appContainers(pod.metadata.uid);
        assert.ok(ctr, "the container runs on the device");
        const cat = (path: string) => inGuest(["exec", "app", "-c", "main", "--", "cat", path]);
        assert.equal(await cat("/cfg/app.conf"), "v1");
        assert.equal(await cat("/creds/password"), "p1");
        assert.equal(await cat("/info/labels"), 'app="app"');
        const token1 = await cat(`${SA}/token`);
        assert.match(token1, /^ey[\w-]+\.[\w-]+\.[\w-]+$/);

        // The sources change: the running container sees the new files, nothing restarts.
        await inGuest([
          "create",
          "configmap",
          "cfg",
          "--from-literal=app.conf=v2",
          "--dry-run=client",
          "-o",
          "yaml",
        ])
          .then((y) => inGuest(["apply", "-f", "-"], y));
        await inGuest([
          "patch",
          "secret",
          "creds",
          "-p",
          JSON.stringify({ stringData: { password: "p2" } }),
        ]);
        await inGuest(["label", "pod", "app", "tier=edge"]);
        const seen = await eventually("the new files inside the container", async () => {
          const files = [
            await cat("/cfg/app.conf"),
            await cat("/creds/password"),
            await cat("/info/labels"),
          ];
          return files.join("|") === 'v2|p2|app="app"\ntier="edge"' ? files : undefined;
        }, 45_000);
        assert.ok(seen);
        assert.deepEqual((await w.appContainers(pod.metadata.uid)).map((c) => c.Id), [ctr.Id]);
        const after = await guestPod("app");
        assert.equal(after.status.containerStatuses[0].restartCount, 0);
        assert.equal(await cat(`${SA}/token`), token1, "the token is cached, not re-requested");

        // activeDeadlineSeconds: stopped on the device, Failed with the kubelet's reason.
        await inGuest(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "deadline" },
            spec: {
              nodeSelector: { "arhat.dev/name": dev },
              activeDeadlineSeconds: 5,
              terminationGracePeriodSeconds: 1,
              containers: [{
                name: "main",
                image: services.endpoints.testImage,
                command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
              }],
            },
          }),
        );
        const failed = await eventually("the deadline pod Failed", async () => {
          const p = await guestPod("deadline");
          return p.status?.phase === "Failed" ? p : undefined;
        }, 90_000);
        assert.equal(failed.status.reason, "DeadlineExceeded");
        assert.equal(
          failed.status.message,
          "Pod was active on the node longer than the specified deadline",
        );
        const ran = Date.parse(failed.status.containerStatuses[0].state.terminated.finishedAt) -
          Date.parse(failed.status.startTime);
        assert.ok(ran >= 5_000, `stopped after the deadline, not before (${ran} ms)`);
        await eventually("the deadline pod's containers gone from the device", async () =>
          (await w.engine.containers({ "arhat.dev/pod-uid": failed.metadata.uid })).length === 0
            ? true
            : undefined, 30_000);

        // A namespace without the label: refused, never on the device.
        await cluster.kubectlOk(
          ["apply", "-n", stranger, "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "intruder" },
            spec: {
              nodeName: dev,
              containers: [{
                name: "c",
                image: services.endpoints.testImage,
                command: ["sleep", "60"],
              }],
            },
          }),
        );
        const refused = await eventually("the stranger refused", async () => {
          const p = JSON.parse(
            await cluster.kubectlOk(["get", "pod", "intruder", "-n", stranger, "-o", "json"]),
          );
          return p.status?.phase === "Failed" ? p : undefined;
        });
        assert.equal(refused.status.reason, "NamespaceNotAllowed");
        assert.match(refused.status.message, /spec\.pod\.allowedNamespaceSelector/);
        assert.deepEqual(
          await w.engine.containers({ "arhat.dev/pod-uid": refused.metadata.uid }),
          [],
        );
      } finally {
        // While aranya runs: it finishes the pods' deletions.
        for (const n of [guest, stranger]) {
          await cluster.kubectl(["delete", "namespace", n, "--ignore-not-found", "--wait=false"]);
        }
        for (const n of [guest, stranger]) {
          await cluster.kubectl(["wait", "--for=delete", `namespace/${n}`, "--timeout=30s"]);
        }
      }
    }),
});
