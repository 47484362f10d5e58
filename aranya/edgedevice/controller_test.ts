/**
 * The EdgeDevice controller against the real control plane: a device gets
 * its Node (labels, taint, the EdgeDevice's and the virtual pod's uids), its
 * credentials Secret and its virtual pod (Pending), in three writes: no
 * finalizer, no status and no Event before the device connects; a spec change
 * updates the Node in place; an API refusal is a Warning ReconcileFailed
 * Event and is retried; only the watched namespaces are served; the hooks
 * hear of live and removed devices; deleting a device removes Node, virtual
 * pod and Secret, also when it was deleted while no aranya ran; a replica
 * reconciles only its share.
 */
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { applyCrds, eventually, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { sleep } from "@aranya/e2e/process";
import { ApiEventRecorder } from "../kube/event_recorder.ts";
import { EdgeDeviceController } from "./controller.ts";
import { credentialsSecretName, type EdgeDevice } from "./types.ts";
import { testClients } from "../kube/testing/test_clients.ts";

interface EventView {
  type: string;
  reason: string;
  message: string;
  count: number;
  involvedObject: { kind: string; uid?: string };
  source: { component: string };
}

Deno.test({
  name: "EdgeDevice controller",
  // client-node's informer keeps a watch connection and timers until stopped; stopped in finally.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const ns = uniqueName("ed");
    const nsFail = uniqueName("ed-quota");
    const nsOther = uniqueName("ed-unwatched");
    const name = uniqueName("dev");
    const failing = uniqueName("dev");
    const other = uniqueName("dev");
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const custom = kc.custom;
    const coordination = kc.coordination;
    const ac = new AbortController();
    const live: EdgeDevice[] = [];
    const removed: string[] = [];
    const controller = new EdgeDeviceController({
      http: kc.http,
      core,
      custom,
      coordination,
      namespaces: [ns, nsFail],
      events: new ApiEventRecorder({ core }),
      onDevice: (ed) => live.push(ed),
      onDeviceRemoved: (namespace, n) => removed.push(`${namespace}/${n}`),
    });
    // A second subscriber (as the device directory is): told too, in order; one that throws
    // (first here) does not keep the others from being told.
    const subscribed: EdgeDevice[] = [];
    controller.subscribe({
      onDevice: () => {
        throw new Error("a failing hook");
      },
    });
    controller.subscribe({ onDevice: (ed) => subscribed.push(ed) });
    const events = async (namespace: string, n: string): Promise<EventView[]> =>
      JSON.parse(
        await cluster.kubectlOk([
          "get",
          "events",
          "-n",
          namespace,
          "--field-selector",
          `involvedObject.name=${n},involvedObject.kind=EdgeDevice`,
          "-o",
          "json",
        ]),
      ).items;
    const getEd = async (namespace: string, n: string) =>
      JSON.parse(await cluster.kubectlOk(["get", "ed", n, "-n", namespace, "-o", "json"]));
    const apply = (namespace: string, obj: unknown) =>
      cluster.kubectlOk(["apply", "-n", namespace, "-f", "-"], JSON.stringify(obj));
    const edgeDevice = (n: string, spec?: unknown) => ({
      apiVersion: "aranya.arhat.dev/v1alpha1",
      kind: "EdgeDevice",
      metadata: { name: n },
      ...(spec ? { spec } : {}),
    });
    let running: Promise<void> | undefined;
    const gone = (what: string[]) =>
      eventually(`${what.join(" ")} to be gone`, async () => {
        const r = await cluster.kubectl(["get", ...what]);
        return r.code !== 0 && /not found/.test(r.stderr) ? true : undefined;
      }, 60_000);
    try {
      await applyCrds(cluster);
      for (const n of [ns, nsFail, nsOther]) await cluster.kubectlOk(["create", "namespace", n]);
      // The virtual pod needs the namespace's default ServiceAccount (the admission plugin looks
      // it up); on a fresh control plane it may trail the namespace, and a retry would add a
      // ReconcileFailed Event to the ones checked below.
      await eventually(
        "the default ServiceAccount",
        async () =>
          (await cluster.kubectl(["get", "sa", "default", "-n", ns])).code === 0 || undefined,
      );
      running = controller.run(ac.signal);
      await controller.ready;

      await t.step(
        "a new EdgeDevice gets its Node, virtual pod and Secret, and nothing else",
        async () => {
          await apply(
            ns,
            edgeDevice(name, {
              node: {
                labels: { "example.com/site": "lab" },
                taints: [{ key: "example.com/flaky", effect: "PreferNoSchedule" }],
              },
            }),
          );
          const node = await eventually("the Node", async () => {
            const r = await cluster.kubectl(["get", "node", name, "-o", "json"]);
            return r.code === 0 ? JSON.parse(r.stdout) : undefined;
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
          // Where its kubelet API is served is written by the replica the device connects to.
          assert.equal(node.status?.addresses, undefined);
          const token = await eventually("the credentials Secret", async () => {
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
          });
          assert.ok(atob(token).length >= 40, "a random token");
          // The Secret comes last: by now the device's objects are all there, and the
          // EdgeDevice itself was not written (no finalizer, no status until it connects).
          const ed = await getEd(ns, name);
          assert.equal(ed.metadata.finalizers, undefined);
          assert.equal(ed.metadata.generation, 1);
          assert.equal(ed.status, undefined);
          const vpod = JSON.parse(
            await cluster.kubectlOk(["get", "pod", name, "-n", ns, "-o", "json"]),
          );
          assert.equal(vpod.spec.nodeName, name);
          assert.deepEqual(vpod.spec.containers.map((c: { name: string }) => c.name), ["host"]);
          assert.equal(vpod.metadata.labels["arhat.dev/role"], "VirtualPod");
          assert.equal(vpod.status.phase, "Pending");
          // Identity by uid: the Node carries the EdgeDevice's uid and the virtual pod's (both
          // written when it was created, by aranya only), and the virtual pod and the Secret
          // are controlled by the EdgeDevice.
          assert.equal(
            node.metadata.annotations["aranya.arhat.dev/edge-device-uid"],
            ed.metadata.uid,
          );
          assert.equal(
            node.metadata.annotations["aranya.arhat.dev/virtual-pod-uid"],
            vpod.metadata.uid,
          );
          assert.equal(controller.virtualPodUid(name), vpod.metadata.uid);
          assert.equal(vpod.metadata.ownerReferences[0].uid, ed.metadata.uid);
          const secretObj = JSON.parse(
            await cluster.kubectlOk([
              "get",
              "secret",
              credentialsSecretName(name),
              "-n",
              ns,
              "-o",
              "json",
            ]),
          );
          assert.equal(secretObj.metadata.ownerReferences[0].uid, ed.metadata.uid);
          assert.equal(secretObj.metadata.ownerReferences[0].controller, true);
          const hooked = live.find((e) => e.metadata?.name === name);
          assert.ok(hooked, "onDevice was called");
          assert.equal(hooked.metadata?.namespace, ns);
          assert.ok(
            subscribed.some((e) => e.metadata?.name === name),
            "a subscriber after a throwing one was told",
          );
        },
      );

      await t.step("a changed spec.node updates the Node in place", async () => {
        const before = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
        // A label someone else set on the Node is left alone.
        await cluster.kubectlOk(["label", "node", name, "example.com/by-hand=yes"]);
        const patch = (spec: unknown) =>
          cluster.kubectlOk([
            "patch",
            "ed",
            name,
            "-n",
            ns,
            "--type=merge",
            "-p",
            JSON.stringify({ spec }),
          ]);
        await patch({
          node: {
            labels: { "example.com/site": "lab2", "example.com/tier": "edge" },
            annotations: { "example.com/owner": "team-a" },
            taints: null,
          },
        });
        const node = await eventually("the Node's new labels", async () => {
          const n = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
          return n.metadata.labels["example.com/tier"] === "edge" ? n : undefined;
        });
        assert.equal(node.metadata.uid, before.metadata.uid, "the same Node");
        assert.equal(node.metadata.labels["example.com/site"], "lab2");
        assert.equal(node.metadata.annotations["example.com/owner"], "team-a");
        assert.ok(
          !node.spec.taints.some((x: { key: string }) => x.key === "example.com/flaky"),
          "the removed taint is gone",
        );
        // Removing a label or an annotation from the spec removes it from the Node.
        await patch({
          node: {
            labels: { "example.com/tier": null },
            annotations: { "example.com/owner": null },
          },
        });
        const after = await eventually("the label to go", async () => {
          const n = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
          return n.metadata.labels["example.com/tier"] === undefined ? n : undefined;
        });
        assert.equal(after.metadata.annotations["example.com/owner"], undefined);
        assert.equal(after.metadata.labels["example.com/site"], "lab2");
        assert.equal(after.metadata.labels["example.com/by-hand"], "yes");
        assert.equal(after.metadata.labels["arhat.dev/name"], name);
        assert.equal(after.metadata.uid, before.metadata.uid, "the same Node");
        // spec.node.namespaceTaint: false drops the namespace taint, true brings it back.
        const namespaceTaint = (n: { spec: { taints?: { key: string }[] } }) =>
          (n.spec.taints ?? []).find((x) => x.key === "arhat.dev/namespace");
        await patch({ node: { namespaceTaint: false } });
        const untainted = await eventually("the namespace taint to go", async () => {
          const n = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
          return namespaceTaint(n) === undefined ? n : undefined;
        });
        assert.equal(untainted.metadata.uid, before.metadata.uid, "the same Node");
        await patch({ node: { namespaceTaint: true } });
        await eventually("the namespace taint back", async () => {
          const n = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
          const t = namespaceTaint(n);
          return t
            ? assert.deepEqual(t, {
              key: "arhat.dev/namespace",
              value: ns,
              effect: "NoSchedule",
            }) ?? true
            : undefined;
        });
      });

      await t.step("an API refusal is a Warning ReconcileFailed Event, then retried", async () => {
        await apply(nsFail, {
          apiVersion: "v1",
          kind: "ResourceQuota",
          metadata: { name: "no-secrets" },
          spec: { hard: { "count/secrets": "0" } },
        });
        await eventually("the quota to be enforced", async () => {
          const hard = await cluster.kubectlOk([
            "get",
            "resourcequota",
            "no-secrets",
            "-n",
            nsFail,
            "-o",
            "jsonpath={.status.hard}",
          ]);
          return hard ? true : undefined;
        });
        await apply(nsFail, edgeDevice(failing));
        const warning = await eventually("a ReconcileFailed Event", async () => {
          const list = await events(nsFail, failing);
          return list.find((e) => e.reason === "ReconcileFailed");
        });
        assert.equal(warning.type, "Warning");
        assert.match(
          warning.message,
          new RegExp(`^Creating Secret "${nsFail}/${credentialsSecretName(failing)}" failed`),
        );
        assert.match(warning.message, /quota/);
        await cluster.kubectlOk(["delete", "resourcequota", "no-secrets", "-n", nsFail]);
        await eventually("the device to recover", async () => {
          const r = await cluster.kubectl([
            "get",
            "secret",
            "-n",
            nsFail,
            credentialsSecretName(failing),
          ]);
          return r.code === 0 ? true : undefined;
        }, 90_000);
        const list = await events(nsFail, failing);
        // Each retry failed alike: one Event, counted, rather than one per retry.
        assert.equal(list.filter((e) => e.message === warning.message).length, 1);
        assert.equal(warning.involvedObject.kind, "EdgeDevice");
        assert.equal(warning.source.component, "aranya");
      });

      await t.step("devices outside the watched namespaces are left alone", async () => {
        await apply(nsOther, edgeDevice(other));
        await sleep(3000);
        assert.ok(
          !live.some((e) => e.metadata?.namespace === nsOther),
          "onDevice was not called for an unwatched namespace",
        );
        assert.ok(live.some((e) => e.metadata?.namespace === nsFail), "the second namespace");
      });

      await t.step(
        "a same-named EdgeDevice in another namespace changes nothing of the Node and cannot delete it",
        async () => {
          const nodeJson = async () =>
            JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
          const before = await nodeJson();
          await apply(nsFail, edgeDevice(name));
          const ed = await eventually("NodeOwned=False on the impostor", async () => {
            const e = await getEd(nsFail, name);
            const c = e.status?.conditions?.find((x: { type: string }) => x.type === "NodeOwned");
            return c?.status === "False" ? e : undefined;
          });
          const cond = ed.status.conditions.find((x: { type: string }) => x.type === "NodeOwned");
          assert.equal(cond.reason, "NodeNameTaken");
          assert.equal(
            cond.message,
            `Node "${name}" already exists and belongs to EdgeDevice "${ns}/${name}"; choose another name for this device`,
          );
          assert.equal(ed.status.node, undefined);
          const warning = await eventually(
            "the NodeNameTaken Event",
            async () => (await events(nsFail, name)).find((e) => e.reason === "NodeNameTaken"),
          );
          assert.equal(warning.type, "Warning");
          await sleep(2000);
          const after = await nodeJson();
          assert.deepEqual(after.metadata.labels, before.metadata.labels);
          assert.deepEqual(after.spec.taints, before.spec.taints);
          assert.deepEqual(after.metadata.annotations, before.metadata.annotations);
          assert.deepEqual(after.status.addresses, before.status.addresses);
          for (const what of [["secret", credentialsSecretName(name)], ["pod", name]]) {
            const r = await cluster.kubectl(["get", ...what, "-n", nsFail]);
            assert.match(r.stderr, /not found/, `no ${what[0]} for the impostor`);
          }
          // Deleting the impostor leaves the Node (and its owner's objects) alone.
          await cluster.kubectlOk(["delete", "ed", name, "-n", nsFail, "--timeout=60s"]);
          assert.equal((await nodeJson()).metadata.uid, before.metadata.uid);
          await cluster.kubectlOk(["get", "pod", name, "-n", ns]);
          await cluster.kubectlOk(["get", "secret", credentialsSecretName(name), "-n", ns]);
        },
      );

      await t.step(
        "a Node deleted while its EdgeDevice exists comes back within seconds",
        async () => {
          const before = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
          // Every version of the Node as the API server stored it, from before the delete on.
          const seen: V1Node[] = [];
          const watching = new AbortController();
          const events = kc.http.watch<V1Node>(
            "/api/v1/nodes",
            { fieldSelector: `metadata.name=${name}` },
            watching.signal,
          );
          const watched = (async () => {
            for await (const ev of events) seen.push(ev.object);
          })();
          await cluster.kubectlOk(["delete", "node", name]);
          const started = Date.now();
          const again = await eventually("the Node to be recreated", async () => {
            const r = await cluster.kubectl(["get", "node", name, "-o", "json"]);
            if (r.code !== 0) return undefined;
            const n = JSON.parse(r.stdout);
            return n.metadata.uid !== before.metadata.uid ? n : undefined;
          }, 15_000);
          assert.ok(Date.now() - started < 15_000);
          // Created with its identity: no version of the new Node is without the EdgeDevice's
          // and the virtual pod's uids.
          watching.abort();
          await watched;
          const versions = seen.filter((n) => n.metadata?.uid === again.metadata.uid);
          assert.ok(versions.length > 0, "the watch saw the new Node");
          for (const n of versions) {
            for (
              const a of ["aranya.arhat.dev/edge-device-uid", "aranya.arhat.dev/virtual-pod-uid"]
            ) {
              assert.equal(n.metadata?.annotations?.[a], before.metadata.annotations[a], a);
            }
          }
          assert.equal(
            again.metadata.annotations["aranya.arhat.dev/edge-device-uid"],
            before.metadata.annotations["aranya.arhat.dev/edge-device-uid"],
          );
          assert.equal(again.metadata.labels["arhat.dev/namespace"], ns);
        },
      );

      await t.step(
        "a Node aranya did not create is never adopted, even with edge labels",
        async () => {
          const fake = `${name}-real`;
          await cluster.kubectlOk(
            ["apply", "-f", "-"],
            JSON.stringify({
              apiVersion: "v1",
              kind: "Node",
              metadata: {
                name: fake,
                labels: {
                  "arhat.dev/role": "EdgeDevice",
                  "arhat.dev/name": fake,
                  "arhat.dev/namespace": ns,
                },
              },
            }),
          );
          try {
            await apply(ns, edgeDevice(fake));
            await eventually("NodeOwned=False", async () => {
              const e = await getEd(ns, fake);
              const c = e.status?.conditions?.find((x: { type: string }) => x.type === "NodeOwned");
              return c?.status === "False" && /was not created by aranya/.test(c.message)
                ? true
                : undefined;
            });
            const n = JSON.parse(await cluster.kubectlOk(["get", "node", fake, "-o", "json"]));
            assert.ok(
              !(n.spec.taints ?? []).some((x: { key: string }) => x.key === "arhat.dev/namespace"),
              "not tainted by aranya",
            );
            assert.equal(n.metadata.annotations?.["aranya.arhat.dev/edge-device-uid"], undefined);
            await cluster.kubectlOk(["delete", "ed", fake, "-n", ns, "--timeout=60s"]);
            await cluster.kubectlOk(["get", "node", fake]);
          } finally {
            await cluster.kubectl(["delete", "node", fake, "--ignore-not-found"]);
          }
        },
      );

      await t.step("deleting the EdgeDevice removes its Node, virtual pod and Secret", async () => {
        await cluster.kubectlOk(["delete", "ed", name, "-n", ns, "--wait=true", "--timeout=60s"]);
        await gone(["node", name]);
        // The Secret by the garbage collector (its owner is gone), the pod by aranya (grace 0).
        await gone(["secret", "-n", ns, credentialsSecretName(name)]);
        await gone(["pod", name, "-n", ns]);
        await eventually(
          "onDeviceRemoved",
          () => Promise.resolve(removed.includes(`${ns}/${name}`) ? true : undefined),
          10_000,
        );
      });

      await t.step(
        "an EdgeDevice deleted while no aranya ran: its Node and virtual pod go at the next start",
        async () => {
          const late = uniqueName("dev");
          await apply(ns, edgeDevice(late));
          await eventually("the Secret of the late device", async () => {
            const r = await cluster.kubectl([
              "get",
              "secret",
              "-n",
              ns,
              credentialsSecretName(late),
            ]);
            return r.code === 0 ? true : undefined;
          });
          ac.abort();
          await running;
          await cluster.kubectlOk(["delete", "ed", late, "-n", ns, "--wait=true", "--timeout=30s"]);
          await cluster.kubectlOk(["get", "node", late]); // nobody removed it yet
          const again = new EdgeDeviceController({
            http: kc.http,
            core,
            custom,
            coordination,
            namespaces: [ns],
          });
          const ac2 = new AbortController();
          const running2 = again.run(ac2.signal);
          try {
            await again.ready;
            await gone(["node", late]);
            await gone(["pod", late, "-n", ns]);
            await gone(["secret", "-n", ns, credentialsSecretName(late)]);
          } finally {
            ac2.abort();
            await running2;
          }
        },
      );

      await t.step("a replica reconciles only its share", async () => {
        const theirs = uniqueName("dev");
        const mine = uniqueName("dev");
        const shared = new EdgeDeviceController({
          http: kc.http,
          core,
          custom,
          coordination,
          namespaces: [ns],
          owns: (key) => key === `${ns}/${mine}`,
        });
        const ac3 = new AbortController();
        const running3 = shared.run(ac3.signal);
        try {
          await shared.ready;
          await apply(ns, edgeDevice(theirs));
          await apply(ns, edgeDevice(mine));
          await eventually("the Node of this replica's device", async () => {
            const r = await cluster.kubectl(["get", "node", mine]);
            return r.code === 0 ? true : undefined;
          });
          // No other controller runs now: the other replica's device was seen (it is cached)
          // and nothing was made for it.
          assert.match((await cluster.kubectl(["get", "node", theirs])).stderr, /not found/);
          assert.ok(shared.device(`${ns}/${theirs}`), "its cache holds every device");
        } finally {
          ac3.abort();
          await running3;
          await cluster.kubectl(["delete", "ed", theirs, mine, "-n", ns, "--wait=false"]);
          await cluster.kubectl(["delete", "node", mine, "--ignore-not-found"]);
        }
      });
    } finally {
      ac.abort();
      await running?.catch(() => {});
      await cluster.kubectl(["delete", "node", name, failing, other, "--ignore-not-found"]);
      for (const [n, d] of [[ns, name], [nsFail, failing], [nsOther, other]] as const) {
        // Nothing serves these finalizers once the controller stopped.
        await cluster.kubectl([
          "patch",
          "ed",
          d,
          "-n",
          n,
          "--type=merge",
          "-p",
          '{"metadata":{"finalizers":null}}',
        ]);
        await cluster.kubectl(["delete", "namespace", n, "--ignore-not-found", "--wait=false"]);
      }
      await cluster.release();
    }
  },
});
