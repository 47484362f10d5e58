/** Server-side apply through client-node against the real API server. */
import assert from "node:assert/strict";
import { KubeConfig, KubernetesObjectApi } from "@kubernetes/client-node";
import { applyCrds, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { edgeDeviceObject } from "./arhat_config.ts";
import { parseInventory } from "./inventory.ts";
import { applyObject, aranyaObjects, refOf } from "./manifests.ts";

Deno.test({
  name:
    "applyObject: created, unchanged on a re-apply, configured on a change; dry runs store nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const cluster = await useCluster();
    const ns = uniqueName("apply");
    try {
      await applyCrds(cluster);
      const kc = new KubeConfig();
      kc.loadFromFile(cluster.kubeconfig);
      const api = KubernetesObjectApi.makeApiClient(kc);
      const namespace = { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } };
      const cm = (v: string) => ({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "c", namespace: ns },
        data: { k: v },
      });

      assert.equal((await applyObject(api, namespace, { dryRun: true })).action, "created");
      assert.notEqual((await cluster.kubectl(["get", "namespace", ns])).code, 0, "dry run stored");
      assert.equal((await applyObject(api, namespace, { dryRun: false })).action, "created");
      assert.equal((await applyObject(api, cm("1"), { dryRun: false })).action, "created");
      assert.equal((await applyObject(api, cm("1"), { dryRun: false })).action, "unchanged");
      assert.equal((await applyObject(api, cm("1"), { dryRun: true })).action, "unchanged");
      assert.equal((await applyObject(api, cm("2"), { dryRun: true })).action, "configured");
      const stored = await cluster.kubectlOk(["get", "cm", "-n", ns, "c", "-o=jsonpath={.data.k}"]);
      assert.equal(stored, "1", "a dry run changed nothing");
      assert.equal((await applyObject(api, cm("2"), { dryRun: false })).action, "configured");

      // The EdgeDevice of each connectivity method is what the CRD accepts.
      const inv = parseInventory(
        `links:
  websocket: { url: "wss://a.example.com/v1/link" }
  grpc: { target: "a.example.com:443" }
  mqtt: { broker: "mqtts://broker.example.com:8883" }
defaults: { namespace: ${ns}, labels: { example.com/site: lab } }
devices:
  - { name: ws, address: 192.0.2.1 }
  - { name: grpc, address: 192.0.2.2, connectivity: grpc }
  - { name: mqtt, address: 192.0.2.3, connectivity: mqtt }
`,
        { env: {}, file: "/f/inventory.yaml" },
      );
      for (const d of inv.devices) {
        const r = await applyObject(api, edgeDeviceObject(d), { dryRun: true });
        assert.equal(r.action, "created", r.ref);
      }

      // A refused object names itself and the API server's reason.
      const bad: Record<string, unknown> = {
        ...edgeDeviceObject(inv.devices[0]!),
        spec: { connectivity: { method: "carrier-pigeon" } },
      };
      await assert.rejects(
        applyObject(api, bad, { dryRun: true }),
        /Applying EdgeDevice .*\/ws failed \(HTTP 422\): .*spec\.connectivity\.method/,
      );

      // deploy/ as the deployer reads it: in order, namespace first, CRD before its users.
      const refs = (await aranyaObjects()).map(refOf);
      assert.equal(refs[0], "Namespace aranya-system");
      assert.equal(refs[1], "CustomResourceDefinition edgedevices.aranya.arhat.dev");
      assert.ok(
        refs.indexOf("ConfigMap aranya-system/aranya-config") < refs.indexOf(
          "Deployment aranya-system/aranya",
        ),
      );
    } finally {
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await cluster.release();
    }
  },
});
