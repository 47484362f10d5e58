/**
 * The EdgeDevice controller against the real control plane: a device gets
 * its Node (labels, taint, address, kubelet port), its credentials Secret, a
 * finalizer and status; deleting it removes Node and Secret, then the device.
 */
import assert from "node:assert/strict";
import { CoreV1Api, CustomObjectsApi, KubeConfig } from "@kubernetes/client-node";
import { applyCrds, eventually, uniqueName, useCluster } from "../../e2e/fixtures.ts";
import { EdgeDeviceController } from "./controller.ts";
import { credentialsSecretName, FINALIZER } from "./types.ts";

Deno.test({
  name: "EdgeDevice controller",
  // client-node's informer keeps a watch connection and timers until stopped; stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const ns = uniqueName("ed");
    const name = uniqueName("dev");
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const ac = new AbortController();
    const controller = new EdgeDeviceController({
      kubeconfig: kc,
      core,
      custom,
      kubeletAddress: "127.0.0.1",
      kubeletPort: 10250,
    });
    let running: Promise<void> | undefined;
    try {
      await applyCrds(cluster);
      await cluster.kubectlOk(["create", "namespace", ns]);
      running = controller.run(ac.signal);
      await controller.ready;

      await t.step(
        "a new EdgeDevice gets its Node, virtual pod, Secret, finalizer and status",
        async () => {
          await cluster.kubectlOk(
            ["apply", "-n", ns, "-f", "-"],
            JSON.stringify({
              apiVersion: "aranya.arhat.dev/v1alpha1",
              kind: "EdgeDevice",
              metadata: { name },
              spec: {
                node: {
                  labels: { "example.com/site": "lab" },
                  taints: [{ key: "example.com/flaky", effect: "PreferNoSchedule" }],
                },
              },
            }),
          );
          const node = await eventually("the Node", async () => {
            const r = await cluster.kubectl(["get", "node", name, "-o", "json"]);
            if (r.code !== 0) return undefined;
            const n = JSON.parse(r.stdout);
            return n.status?.addresses?.length ? n : undefined;
          });
          assert.equal(node.metadata.labels["arhat.dev/role"], "EdgeDevice");
          assert.equal(node.metadata.labels["arhat.dev/name"], name);
          assert.equal(node.metadata.labels["arhat.dev/namespace"], ns);
          assert.equal(node.metadata.labels["example.com/site"], "lab");
          const taints = node.spec.taints.map((x: { key: string }) => x.key);
          assert.ok(taints.includes("arhat.dev/namespace"), taints.join(","));
          assert.ok(taints.includes("example.com/flaky"), taints.join(","));
          const own = node.spec.taints.find((x: { key: string }) =>
            x.key === "arhat.dev/namespace"
          );
          assert.deepEqual(own, { key: "arhat.dev/namespace", value: ns, effect: "NoSchedule" });
          assert.deepEqual(node.status.addresses, [{ type: "InternalIP", address: "127.0.0.1" }]);
          assert.equal(node.status.daemonEndpoints.kubeletEndpoint.Port, 10250);
          const token = await cluster.kubectlOk([
            "get",
            "secret",
            "-n",
            ns,
            credentialsSecretName(name),
            "-o",
            "jsonpath={.data.token}",
          ]);
          assert.ok(atob(token).length >= 40, "a random token");
          const ed = await eventually("the EdgeDevice status", async () => {
            const e = JSON.parse(
              await cluster.kubectlOk(["get", "ed", name, "-n", ns, "-o", "json"]),
            );
            return e.status?.node === name ? e : undefined;
          });
          assert.ok(ed.metadata.finalizers.includes(FINALIZER));
          assert.equal(ed.status.phase, "Pending");
          const vpod = JSON.parse(
            await cluster.kubectlOk(["get", "pod", name, "-n", ns, "-o", "json"]),
          );
          assert.equal(vpod.spec.nodeName, name);
          assert.deepEqual(vpod.spec.containers.map((c: { name: string }) => c.name), ["host"]);
          assert.equal(vpod.metadata.labels["arhat.dev/role"], "VirtualPod");
        },
      );

      await t.step("deleting the EdgeDevice removes its Node, virtual pod and Secret", async () => {
        await cluster.kubectlOk(["delete", "ed", name, "-n", ns, "--wait=true", "--timeout=60s"]);
        const node = await cluster.kubectl(["get", "node", name]);
        assert.notEqual(node.code, 0);
        assert.match(node.stderr, /not found/);
        const secret = await cluster.kubectl([
          "get",
          "secret",
          "-n",
          ns,
          credentialsSecretName(name),
        ]);
        assert.match(secret.stderr, /not found/);
        const vpod = await cluster.kubectl(["get", "pod", name, "-n", ns]);
        assert.match(vpod.stderr, /not found/);
      });
    } finally {
      ac.abort();
      await running?.catch(() => {});
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await cluster.release();
    }
  },
});
