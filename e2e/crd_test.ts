/**
 * The EdgeDevice CRD from deploy/crds against the real API server: it applies,
 * the samples are accepted, invalid specs are refused with a message naming
 * the field, and `kubectl get ed` shows the printer columns.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { eventually, uniqueName, useCluster } from "./fixtures.ts";
import { ROOT } from "./paths.ts";

const CRD = `${ROOT}/deploy/crds/aranya.arhat.dev_edgedevices.yaml`;
const SAMPLES = `${ROOT}/deploy/samples/edgedevices.yaml`;
const INVALID_DIR = `${ROOT}/e2e/testdata/invalid`;

Deno.test("EdgeDevice CRD", async (t) => {
  const cluster = await useCluster();
  const ns = uniqueName("crd");
  try {
    await t.step("applies and becomes Established", async () => {
      await cluster.kubectlOk(["apply", "--server-side", "--force-conflicts", "-f", CRD]);
      await cluster.kubectlOk([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/edgedevices.aranya.arhat.dev",
      ]);
      // Discovery can trail the Established condition by a moment.
      await eventually("the ed short name in discovery", async () => {
        const r = await cluster.kubectl(["get", "ed", "-A"]);
        return r.code === 0 ? true : undefined;
      });
      await cluster.kubectlOk(["create", "namespace", ns]);
    });

    await t.step("the samples are accepted (one per transport)", async () => {
      const docs = parseAllDocuments(await Deno.readTextFile(SAMPLES)).map((d) => d.toJS());
      const devices = docs.filter((d) => d?.kind === "EdgeDevice");
      const methods = devices.map((d) => d.spec.connectivity.method).sort();
      assert.deepEqual(methods, ["grpc", "mqtt", "websocket"]);
      const mqtt = devices.find((d) => d.spec.connectivity.method === "mqtt");
      assert.ok(mqtt.spec.connectivity.mqttConfig.messageNamespace);
      for (const d of devices) d.metadata.namespace = ns;
      await cluster.kubectlOk(
        ["apply", "-f", "-"],
        JSON.stringify({ apiVersion: "v1", kind: "List", items: devices }),
      );
      const got = JSON.parse(await cluster.kubectlOk(["get", "ed", "-n", ns, "-o", "json"]));
      assert.equal(got.items.length, 3);
      // Defaults come from the schema.
      const ws = got.items.find((i: { metadata: { name: string } }) =>
        i.metadata.name === "example-edge-device-ws"
      );
      assert.equal(ws.spec.connectivity.method, "websocket");
      const grpc = got.items.find((i: { metadata: { name: string } }) =>
        i.metadata.name === "example-edge-device-grpc"
      );
      assert.equal(grpc.spec.pod.allocatable, 10);
    });

    await t.step("a spec without connectivity defaults to websocket", async () => {
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "aranya.arhat.dev/v1alpha1",
          kind: "EdgeDevice",
          metadata: { name: "bare" },
        }),
      );
      const method = await cluster.kubectlOk([
        "get",
        "ed",
        "bare",
        "-n",
        ns,
        "-o",
        "jsonpath={.spec.connectivity.method}",
      ]);
      assert.equal(method, "websocket");
      // spec.node.namespaceTaint defaults to true once spec.node is there.
      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "aranya.arhat.dev/v1alpha1",
          kind: "EdgeDevice",
          metadata: { name: "tenancy" },
          spec: {
            node: { labels: { "example.com/x": "1" } },
            pod: {
              allowedNamespaceSelector: {
                matchLabels: { "example.com/edge": "shared" },
                matchExpressions: [{ key: "env", operator: "Exists" }],
              },
            },
          },
        }),
      );
      const tenancy = JSON.parse(
        await cluster.kubectlOk(["get", "ed", "tenancy", "-n", ns, "-o", "json"]),
      );
      assert.equal(tenancy.spec.node.namespaceTaint, true);
      assert.deepEqual(tenancy.spec.pod.allowedNamespaceSelector.matchExpressions, [
        { key: "env", operator: "Exists" },
      ]);
    });

    const invalid: { file: string; field: string }[] = [];
    for await (const e of Deno.readDir(INVALID_DIR)) {
      if (!e.name.endsWith(".yaml")) continue;
      const text = await Deno.readTextFile(`${INVALID_DIR}/${e.name}`);
      const field = text.match(/^# expect: (\S+)/m)?.[1];
      assert.ok(field, `${e.name} must start with "# expect: <field path>"`);
      invalid.push({ file: `${INVALID_DIR}/${e.name}`, field });
    }
    invalid.sort((a, b) => a.file.localeCompare(b.file));
    assert.ok(invalid.length >= 5, "at least five invalid specs");

    for (const { file, field } of invalid) {
      const name = file.slice(file.lastIndexOf("/") + 1);
      await t.step(`refuses ${name}, naming ${field}`, async () => {
        const r = await cluster.kubectl(["create", "-n", ns, "-f", file]);
        assert.notEqual(r.code, 0, `${name} was accepted but must be refused`);
        // Invalid values: "is invalid"; fields the schema does not have: a strict decoding error.
        assert.match(r.stderr, /is invalid|strict decoding error: unknown field/, r.stderr);
        assert.ok(
          r.stderr.includes(field),
          `the refusal of ${name} must name "${field}"; got: ${r.stderr.trim()}`,
        );
      });
    }

    await t.step("nothing invalid was stored", async () => {
      const names = await cluster.kubectlOk([
        "get",
        "ed",
        "-n",
        ns,
        "-o",
        "jsonpath={.items[*].metadata.name}",
      ]);
      assert.ok(!names.includes("bad-"), names);
    });

    await t.step("kubectl get ed shows the printer columns", async () => {
      const out = await cluster.kubectlOk(["get", "ed", "-n", ns]);
      const header = out.split("\n")[0]!.trim().split(/\s+/);
      assert.deepEqual(header, ["NAME", "CONNECTIVITY", "STATUS", "NODE", "AGE"]);
      const row = out.split("\n").find((l) => l.startsWith("example-edge-device-mqtt"));
      assert.ok(row, out);
      assert.match(row!, /\bmqtt\b/);
      const wide = await cluster.kubectlOk(["get", "eds", "-n", ns, "-o", "wide"]);
      assert.match(wide.split("\n")[0]!, /LAST-SEEN/);
    });
  } finally {
    await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
    await cluster.release();
  }
});
