/**
 * The informer against the real API server: list, then add/update/delete from
 * the watch, managedFields dropped, a relist after a restart, and a refused
 * list rejecting start().
 */
import assert from "node:assert/strict";
import type { V1ConfigMap } from "@kubernetes/client-node";
import { eventually, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { Informer } from "./informer.ts";
import { ApiError } from "./kube_http.ts";
import { testClients } from "./testing/test_clients.ts";

Deno.test("Informer lists, then follows the watch; start() again relists", async () => {
  const cluster = await useCluster();
  const ns = uniqueName("informer");
  const clients = testClients(cluster.kubeconfig);
  const { core } = clients;
  const informer = new Informer<V1ConfigMap>({
    http: clients.http,
    path: `/api/v1/namespaces/${ns}/configmaps`,
    labelSelector: "app=x",
  });
  const events: string[] = [];
  for (const verb of ["add", "update", "delete"] as const) {
    informer.on(verb, (cm) => events.push(`${verb} ${cm.metadata?.name} ${cm.data?.v ?? ""}`));
  }
  const errors: unknown[] = [];
  informer.on("error", (err) => errors.push(err));
  const cm = (name: string, v: string, app = "x"): V1ConfigMap => ({
    metadata: { name, labels: { app } },
    data: { v },
  });
  try {
    await cluster.kubectlOk(["create", "namespace", ns]);
    await core.createNamespacedConfigMap({ namespace: ns, body: cm("before", "1") });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm("other", "1", "y") });
    await informer.start();
    assert.deepEqual(events, ["add before 1"], "the list, narrowed by the label selector");
    assert.equal(informer.get("before", ns)?.data?.v, "1");
    assert.equal(informer.get("before", ns)?.metadata?.managedFields, undefined);
    assert.equal(informer.list(ns).length, 1);

    await core.createNamespacedConfigMap({ namespace: ns, body: cm("after", "2") });
    await core.patchNamespacedConfigMap({
      name: "before",
      namespace: ns,
      body: [{ op: "replace", path: "/data/v", value: "3" }],
    });
    await core.deleteNamespacedConfigMap({ name: "after", namespace: ns });
    await eventually(
      "the watch's three events",
      () => Promise.resolve(events.length >= 4 || undefined),
      10_000,
    );
    assert.deepEqual(events, ["add before 1", "add after 2", "update before 3", "delete after 2"]);
    assert.equal(informer.get("before", ns)?.data?.v, "3");
    assert.equal(informer.get("after", ns), undefined);
    assert.equal(informer.get("before", ns)?.metadata?.managedFields, undefined);

    // Stopped, it misses changes; started again, the relist tells them.
    await informer.stop();
    await core.deleteNamespacedConfigMap({ name: "before", namespace: ns });
    await core.createNamespacedConfigMap({ namespace: ns, body: cm("late", "4") });
    events.length = 0;
    await informer.start();
    assert.deepEqual(events.sort(), ["add late 4", "delete before 3"]);
    // A relist that finds nothing changed tells nothing.
    await informer.stop();
    events.length = 0;
    await informer.start();
    assert.deepEqual(events, []);
    assert.equal(informer.get("late", ns)?.data?.v, "4");
    assert.deepEqual(errors, []);
  } finally {
    await informer.stop();
    clients.http.close();
    await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
    await cluster.release();
  }
});

Deno.test("Informer.start() rejects when the list is refused", async () => {
  const cluster = await useCluster();
  const clients = testClients(cluster.kubeconfig);
  try {
    const informer = new Informer({ http: clients.http, path: "/apis/no.such.group/v1/things" });
    await assert.rejects(
      informer.start(),
      (err: unknown) => err instanceof ApiError && err.code === 404,
    );
  } finally {
    clients.http.close();
    await cluster.release();
  }
});

Deno.test("Informer.start() tells a refused list to the error handlers when there are some", async () => {
  const cluster = await useCluster();
  const clients = testClients(cluster.kubeconfig);
  try {
    const informer = new Informer({ http: clients.http, path: "/apis/no.such.group/v1/things" });
    const errors: unknown[] = [];
    informer.on("error", (err) => errors.push(err));
    await informer.start();
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof ApiError && errors[0].code === 404);
  } finally {
    clients.http.close();
    await cluster.release();
  }
});
