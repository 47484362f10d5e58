/**
 * The event recorder against the real control plane: Events carry the object,
 * type, reason, message and source; repeats within the window update one
 * Event's count; after the window a new Event is made; failures are reported
 * as false and logged, never thrown.
 */
import assert from "node:assert/strict";
import type { CoreV1Event } from "@kubernetes/client-node";
import { uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { createLogger } from "@aranya/common/log";
import { ApiEventRecorder, type ObjectRef } from "./event_recorder.ts";
import { testClients } from "./testing/test_clients.ts";

Deno.test("event recorder", async (t) => {
  const cluster = await useCluster();
  const ns = uniqueName("ev");
  const kc = testClients(cluster.kubeconfig);
  const core = kc.core;
  let clock = Date.parse("2030-01-01T00:00:00Z");
  const lines: string[] = [];
  const recorder = new ApiEventRecorder({
    core,
    host: "test-replica",
    now: () => new Date(clock),
    log: createLogger({ sink: (l) => lines.push(l) }),
  });
  const events = async (name: string, namespace = ns): Promise<CoreV1Event[]> =>
    (await core.listNamespacedEvent({
      namespace,
      fieldSelector: `involvedObject.name=${name}`,
    })).items;
  try {
    await cluster.kubectlOk(["create", "namespace", ns]);

    await t.step("an event names its object, type, reason, message and source", async () => {
      const ref: ObjectRef = {
        apiVersion: "aranya.arhat.dev/v1alpha1",
        kind: "EdgeDevice",
        name: "dev-a",
        namespace: ns,
        uid: crypto.randomUUID(),
      };
      assert.equal(
        await recorder.record(ref, "Normal", "NodeCreated", 'Created Node "dev-a"'),
        true,
      );
      const [e, ...rest] = await events("dev-a");
      assert.equal(rest.length, 0);
      assert.deepEqual(
        {
          kind: e!.involvedObject.kind,
          apiVersion: e!.involvedObject.apiVersion,
          uid: e!.involvedObject.uid,
          namespace: e!.involvedObject.namespace,
        },
        { kind: "EdgeDevice", apiVersion: ref.apiVersion, uid: ref.uid, namespace: ns },
      );
      assert.equal(e!.type, "Normal");
      assert.equal(e!.reason, "NodeCreated");
      assert.equal(e!.message, 'Created Node "dev-a"');
      assert.equal(e!.count, 1);
      assert.equal(e!.source?.component, "aranya");
      assert.equal(e!.source?.host, "test-replica");
      assert.equal(e!.reportingComponent, "aranya");
      // kubectl shows it too.
      const out = await cluster.kubectlOk(["get", "events", "-n", ns, "-o", "wide"]);
      assert.match(out, /NodeCreated/);
    });

    await t.step("repeats within 10 min update one Event; after that a new one", async () => {
      const ref: ObjectRef = { kind: "Pod", apiVersion: "v1", name: "pod-b", namespace: ns };
      const before = recorder.writes;
      // Concurrent repeats are serialized: still one Event.
      const results = await Promise.all([
        recorder.record(ref, "Warning", "Flapping", "it flaps"),
        recorder.record(ref, "Warning", "Flapping", "it flaps"),
      ]);
      assert.deepEqual(results, [true, true]);
      clock += 9 * 60_000;
      await recorder.record(ref, "Warning", "Flapping", "it flaps");
      let list = await events("pod-b");
      assert.equal(list.length, 1);
      assert.equal(list[0]!.count, 3);
      assert.equal(list[0]!.type, "Warning");
      assert.equal(
        new Date(list[0]!.lastTimestamp!).getTime() - new Date(list[0]!.firstTimestamp!).getTime(),
        9 * 60_000,
      );
      // Another message is another Event.
      await recorder.record(ref, "Warning", "Flapping", "it flaps harder");
      list = await events("pod-b");
      assert.equal(list.length, 2);
      // More than 10 min after the last repeat: a new Event.
      clock += 11 * 60_000;
      await recorder.record(ref, "Warning", "Flapping", "it flaps");
      list = await events("pod-b");
      assert.equal(list.length, 3);
      assert.deepEqual(list.map((e) => e.count).sort(), [1, 1, 3]);
      assert.equal(recorder.writes - before, 5, "3 creates and 2 patches");
    });

    await t.step("events about cluster-scoped objects go to the default namespace", async () => {
      const node = uniqueName("node");
      await recorder.record({ kind: "Node", apiVersion: "v1", name: node }, "Normal", "R", "m");
      const list = await events(node, "default");
      assert.equal(list.length, 1);
      assert.equal(list[0]!.involvedObject.namespace, undefined);
      await core.deleteNamespacedEvent({ name: list[0]!.metadata.name!, namespace: "default" });
    });

    await t.step("a deleted Event is made anew on the next repeat", async () => {
      const ref: ObjectRef = { kind: "Pod", apiVersion: "v1", name: "pod-c", namespace: ns };
      await recorder.record(ref, "Normal", "Again", "m");
      const [e] = await events("pod-c");
      await core.deleteNamespacedEvent({ name: e!.metadata.name!, namespace: ns });
      assert.equal(await recorder.record(ref, "Normal", "Again", "m"), true);
      const list = await events("pod-c");
      assert.equal(list.length, 1);
      assert.equal(list[0]!.count, 1);
    });

    await t.step("a failed write resolves false and is logged, never thrown", async () => {
      const missing = uniqueName("missing-ns");
      const ok = await recorder.record(
        { kind: "Pod", apiVersion: "v1", name: "p", namespace: missing },
        "Warning",
        "Whatever",
        "m",
      );
      assert.equal(ok, false);
      const line = lines.map((l) => JSON.parse(l)).find((l) =>
        l.msg === "creating an event failed"
      );
      assert.ok(line, lines.join("\n"));
      assert.match(line.error, new RegExp(`Creating Event "${missing}/p\\.[0-9a-f]+" failed`));
      assert.equal(line.level, "warn");
    });
  } finally {
    await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
    await cluster.release();
  }
});
