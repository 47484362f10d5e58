/**
 * Tenancy and device identity, attacked as a tenant would: the real control
 * plane, the real aranya process with the deploy/ RBAC and admission
 * policies, a real arhat on Podman (host exec allowed), and a tenant whose
 * kubeconfig holds only namespace rights in its own namespace (pods,
 * pods/exec, secrets, edgedevices there).
 *
 * Each attack is refused with a clear error, and nothing of the victim device
 * changes: its Node's labels, taints and addresses, its running pod (same
 * container, no restart), its host.
 *
 * - a tenant pod bound to the victim's Node: Failed, reason
 *   NamespaceNotAllowed, never on the device;
 * - a look-alike "virtual pod" (label arhat.dev/role=VirtualPod, container
 *   host) bound to the Node: `kubectl exec -c host` is refused; the real
 *   virtual pod still reaches the host;
 * - a same-named EdgeDevice in the tenant's namespace: NodeOwned=False,
 *   NodeNameTaken, no Secret, no virtual pod; deleting it deletes nothing;
 *   spec.pod.allowedNamespaces, spec.pod.allowedNamespaceSelector and
 *   spec.node.namespaceTaint false are refused to the tenant (admission), other
 *   changes of its EdgeDevice are not;
 * - an impostor device: a self-made credentials Secret (even one owned by the
 *   tenant's EdgeDevice), another device's token, a client certificate for
 *   another name: all refused by the real aranya;
 * - the Node deleted by an admin comes back Ready, with its node info.
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { websocketMethod } from "./edge_fixtures.ts";
import { clusterHandle, eventually, uniqueName } from "./fixtures.ts";
import { freePort, sleep } from "./process.ts";
import { advertisedAddress } from "./kubelet_fixtures.ts";
import { makeTestCerts } from "./link/test_certs.ts";
import { inWorld, TEST } from "./edge_world.ts";
import { WebSocketLinkDialer } from "@aranya/arhat/connectivity/websocket/ws_link_dialer";
import { UnauthenticatedError } from "@aranya/common/errors";
import { credentialsSecretName } from "@aranya/aranya/edgedevice/types";

Deno.test({
  name:
    "e2e tenancy: a tenant with namespace rights cannot reach another tenant's device, Node or host",
  ...TEST,
  fn: () =>
    inWorld(async (w, cluster, services) => {
      const t2 = uniqueName("tenant");
      const port = freePort();
      const httpPort = freePort();
      const dev = uniqueName("dev");
      const dev2 = uniqueName("dev");
      const certs = await makeTestCerts(`${w.dir}/device-ca`, [
        `${w.ns}/${dev2}`,
        `${w.ns}/other`,
      ]);
      try {
        await cluster.kubectlOk(["create", "namespace", t2]);
        const aranya = await w.startAranya(aranyaConfigYaml({
          kubeconfig: w.kubeconfig,
          namespaces: [w.ns, t2],
          httpPort,
          websocket: {
            port,
            certFile: `${w.dir}/tls.crt`,
            keyFile: `${w.dir}/tls.key`,
            clientCaFile: certs.caPath,
          },
          kubelet: { address: advertisedAddress(), port: freePort(), portCount: 4 },
          node: { heartbeat: "1s", leaseDuration: "10s" },
        }));
        await waitAranyaReady(aranya, httpPort);
        const token = await w.createDevice(dev);
        await w.startArhat(dev, websocketMethod(port, token, `${w.arhatDir}/ca.crt`), {
          allowHost: true,
        });
        await w.nodeReady(dev, "True");

        // The victim's workload.
        await w.kubectl(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "victim", labels: { app: "victim" } },
            spec: {
              nodeName: dev,
              terminationGracePeriodSeconds: 1,
              containers: [{
                name: "main",
                image: services.endpoints.testImage,
                command: ["sh", "-c", "sleep 3600"],
              }],
            },
          }),
        );
        const victim = await w.runningPod("app=victim");
        const [victimCtr] = await w.appContainers(victim.metadata.uid);
        assert.ok(victimCtr, "the victim's container runs on the device");
        const nodeJson = async () =>
          JSON.parse(await cluster.kubectlOk(["get", "node", dev, "-o", "json"]));
        const before = await nodeJson();
        const ownerUid = before.metadata.annotations["aranya.arhat.dev/edge-device-uid"];
        assert.ok(ownerUid, "the Node carries its EdgeDevice's uid");

        // The tenant: a ServiceAccount with a Role in t2 only; kubectl with its token alone.
        await cluster.kubectlOk(["apply", "-n", t2, "-f", "-"], tenantRbac());
        const tenantToken = (await cluster.kubectlOk(["create", "token", "tenant", "-n", t2]))
          .trim();
        const view = JSON.parse(
          await cluster.kubectlOk(["config", "view", "--raw", "--minify", "-o", "json"]),
        );
        const tenantConfig = `${w.dir}/tenant.kubeconfig`;
        await Deno.writeTextFile(
          tenantConfig,
          JSON.stringify({
            apiVersion: "v1",
            kind: "Config",
            clusters: [{ name: "c", cluster: view.clusters[0].cluster }],
            users: [{ name: "tenant", user: { token: tenantToken } }],
            contexts: [{ name: "t", context: { cluster: "c", user: "tenant", namespace: t2 } }],
            "current-context": "t",
          }),
        );
        const tenant = clusterHandle(tenantConfig, () => Promise.resolve());
        const denied = await tenant.kubectl(["get", "pods", "-n", w.ns]);
        assert.notEqual(denied.code, 0, "the tenant has no rights in the victim's namespace");

        // 1. A tenant pod bound to the victim's Node: refused like a kubelet refuses a pod.
        await tenant.kubectlOk(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "intruder" },
            spec: {
              nodeName: dev,
              containers: [{
                name: "c",
                image: services.endpoints.testImage,
                command: ["sh", "-c", "sleep 3600"],
              }],
            },
          }),
        );
        const intruder = await eventually("the intruder refused", async () => {
          const p = JSON.parse(await tenant.kubectlOk(["get", "pod", "intruder", "-o", "json"]));
          return p.status?.phase === "Failed" ? p : undefined;
        });
        assert.equal(intruder.status.reason, "NamespaceNotAllowed");
        assert.match(
          intruder.status.message,
          new RegExp(`EdgeDevice "${w.ns}/${dev}" runs pods of namespace "${w.ns}" only`),
        );
        assert.deepEqual(
          await w.engine.containers({ "arhat.dev/pod-uid": intruder.metadata.uid }),
          [],
          "nothing of the intruder on the device",
        );

        // 2. A look-alike virtual pod: no shell on the device host.
        await tenant.kubectlOk(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "lookalike", labels: { "arhat.dev/role": "VirtualPod" } },
            spec: {
              nodeName: dev,
              containers: [{ name: "host", image: "virtualpod.aranya.arhat.dev/host:device" }],
            },
          }),
        );
        await eventually("the look-alike refused", async () => {
          const p = JSON.parse(await tenant.kubectlOk(["get", "pod", "lookalike", "-o", "json"]));
          return p.status?.phase === "Failed" ? p : undefined;
        });
        const shell = await tenant.kubectl(["exec", "lookalike", "-c", "host", "--", "id"]);
        assert.notEqual(shell.code, 0, "exec into the look-alike must fail");
        assert.doesNotMatch(shell.stdout, /uid=/);
        // kubectl itself may stop at the Failed phase; the logs request reaches aranya's kubelet
        // API, which refuses the pod by name, namespace and uid.
        const logs = await tenant.kubectl(["logs", "lookalike", "-c", "host"]);
        assert.notEqual(logs.code, 0, "host logs through the look-alike must fail");
        assert.match(logs.stderr, /may not run on node/, logs.stderr);
        // The real virtual pod (the device allows host exec) still reaches the host.
        const host = await w.kubectl(["exec", dev, "-c", "host", "--", "id"]);
        assert.match(host, /uid=\d+/);

        // 3. A same-named EdgeDevice in the tenant's namespace takes nothing.
        await tenant.kubectlOk(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "aranya.arhat.dev/v1alpha1",
            kind: "EdgeDevice",
            metadata: { name: dev },
          }),
        );
        const impostorEd = await eventually(
          "NodeOwned=False on the tenant's EdgeDevice",
          async () => {
            const e = JSON.parse(await tenant.kubectlOk(["get", "ed", dev, "-o", "json"]));
            const c = e.status?.conditions?.find((x: { type: string }) => x.type === "NodeOwned");
            return c?.status === "False" ? e : undefined;
          },
        );
        const taken = impostorEd.status.conditions.find((x: { type: string }) =>
          x.type === "NodeOwned"
        );
        assert.equal(taken.reason, "NodeNameTaken");
        assert.match(taken.message, new RegExp(`belongs to EdgeDevice "${w.ns}/${dev}"`));
        const noSecret = await tenant.kubectl(["get", "secret", credentialsSecretName(dev)]);
        assert.match(noSecret.stderr, /not found/, "no credentials for the impostor");
        // The opt-in to other namespaces' pods is a cluster admin's, not the tenant's.
        const optIn = await tenant.kubectl([
          "patch",
          "ed",
          dev,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: { pod: { allowedNamespaces: [w.ns] } } }),
        ]);
        assert.notEqual(optIn.code, 0);
        assert.match(optIn.stderr, /may be set or changed only by a cluster admin/);
        // So are the namespace selector and dropping the namespace taint (which would let the
        // scheduler put other tenants' pods on the device, only to be refused there).
        for (
          const [spec, field] of [
            [{ pod: { allowedNamespaceSelector: {} } }, "spec.pod.allowedNamespaceSelector"],
            [{ node: { namespaceTaint: false } }, "spec.node.namespaceTaint"],
          ] as const
        ) {
          const r = await tenant.kubectl([
            "patch",
            "ed",
            dev,
            "--type=merge",
            "-p",
            JSON.stringify({ spec }),
          ]);
          assert.notEqual(r.code, 0, `${field} must be refused to the tenant`);
          assert.match(r.stderr, new RegExp(`${field.replaceAll(".", "\\.")} may be set`));
        }
        // Other changes of its own EdgeDevice stay the tenant's (the policy compares fields).
        await tenant.kubectlOk([
          "patch",
          "ed",
          dev,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: { node: { labels: { "example.com/site": "t2" } } } }),
        ]);

        // 4. Impostor devices, against the real aranya.
        const dial = (
          device: string,
          o: { token?: string; cert?: { cert: string; key: string } },
        ) =>
          new WebSocketLinkDialer({
            url: `wss://localhost:${port}/v1/link`,
            device,
            token: o.token,
            tls: { ca: w.tls.ca, cert: o.cert?.cert, key: o.cert?.key },
            connectTimeoutMs: 10_000,
          }).dial(AbortSignal.timeout(20_000));
        // A Secret the tenant made itself, even one owned by its own EdgeDevice.
        await tenant.kubectlOk(
          ["apply", "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Secret",
            metadata: {
              name: credentialsSecretName(dev),
              ownerReferences: [{
                apiVersion: "aranya.arhat.dev/v1alpha1",
                kind: "EdgeDevice",
                name: dev,
                uid: impostorEd.metadata.uid,
                controller: true,
              }],
            },
            stringData: { token: "made-by-the-tenant" },
          }),
        );
        await assert.rejects(
          dial(`${t2}/${dev}`, { token: "made-by-the-tenant" }),
          UnauthenticatedError,
        );
        // Another device's token.
        const token2 = await w.createDevice(dev2);
        const token2Text = (await Deno.readTextFile(token2)).trim();
        await assert.rejects(dial(`${w.ns}/${dev}`, { token: token2Text }), UnauthenticatedError);
        // A certificate from the device CA for another name.
        await assert.rejects(
          dial(`${w.ns}/${dev2}`, { cert: certs.clients[`${w.ns}/other`] }),
          UnauthenticatedError,
        );
        // ... while the right certificate is accepted (the device CA works).
        const byCert = await dial(`${w.ns}/${dev2}`, { cert: certs.clients[`${w.ns}/${dev2}`] });
        byCert.close();

        // The tenant deletes its EdgeDevice: nothing of the victim goes.
        await tenant.kubectlOk(["delete", "ed", dev, "--timeout=60s"]);
        await sleep(1000);
        const after = await nodeJson();
        assert.equal(after.metadata.uid, before.metadata.uid, "the same Node");
        assert.deepEqual(after.metadata.labels, before.metadata.labels);
        assert.deepEqual(after.spec.taints, before.spec.taints);
        assert.deepEqual(after.status.addresses, before.status.addresses);
        assert.equal(after.metadata.annotations["aranya.arhat.dev/edge-device-uid"], ownerUid);
        await w.nodeReady(dev, "True");
        // The victim's kubelet port still serves it (it is not released with the impostor).
        assert.equal(
          (await w.kubectl(["exec", "victim", "-c", "main", "--", "echo", "still-here"])).trim(),
          "still-here",
        );

        // 5. The Node deleted by an admin comes back Ready, with the device's node info.
        await cluster.kubectlOk(["delete", "node", dev]);
        const back = await eventually("the Node back and Ready with its node info", async () => {
          const r = await cluster.kubectl(["get", "node", dev, "-o", "json"]);
          if (r.code !== 0) return undefined;
          const n = JSON.parse(r.stdout);
          const ready = n.status?.conditions?.find((c: { type: string }) => c.type === "Ready");
          return n.metadata.uid !== before.metadata.uid && ready?.status === "True" &&
              n.status?.nodeInfo?.osImage
            ? n
            : undefined;
        }, 30_000);
        assert.deepEqual(back.metadata.labels, before.metadata.labels);
        assert.deepEqual(back.status.addresses, before.status.addresses);
        assert.equal(back.status.nodeInfo.machineID, before.status.nodeInfo.machineID);

        // Nothing of the victim's pod changed through all of this.
        const still = JSON.parse(await w.kubectl(["get", "pod", "victim", "-o", "json"]));
        assert.equal(still.metadata.uid, victim.metadata.uid);
        assert.equal(still.status.phase, "Running");
        assert.equal(still.status.containerStatuses[0].restartCount, 0);
        const [ctrNow] = await w.appContainers(victim.metadata.uid);
        assert.equal(ctrNow?.Id, victimCtr.Id, "the same container");
      } finally {
        await cluster.kubectl(["delete", "namespace", t2, "--ignore-not-found", "--wait=false"]);
        await cluster.kubectl(["wait", "--for=delete", `namespace/${t2}`, "--timeout=20s"]);
      }
    }),
});

/** The tenant's identity: namespace rights only (pods, pods/exec, secrets, edgedevices). */
function tenantRbac(): string {
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "tenant" } },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: { name: "tenant" },
      rules: [
        {
          apiGroups: [""],
          resources: ["pods", "secrets"],
          verbs: ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
        { apiGroups: [""], resources: ["pods/exec", "pods/attach"], verbs: ["create", "get"] },
        { apiGroups: [""], resources: ["pods/log"], verbs: ["get"] },
        {
          apiGroups: ["aranya.arhat.dev"],
          resources: ["edgedevices"],
          verbs: ["get", "list", "watch", "create", "update", "patch", "delete"],
        },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: { name: "tenant" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "tenant" },
      subjects: [{ kind: "ServiceAccount", name: "tenant" }],
    },
  ].map((o) => JSON.stringify(o)).join("\n---\n");
}
