/**
 * The local control plane is real: the built kubectl talks to the built
 * kube-apiserver, the controller-manager signs CSRs and the scheduler
 * schedules (or, with no nodes, reports pods unschedulable).
 */
import assert from "node:assert/strict";
import { eventually, uniqueName, useCluster } from "../fixtures.ts";
import { CACHE } from "../paths.ts";
import { pinnedVersion } from "./build.ts";

Deno.test("control plane", async (t) => {
  const cluster = await useCluster();
  try {
    await t.step("kubectl get --raw /readyz answers ok", async () => {
      const out = await cluster.kubectlOk(["get", "--raw", "/readyz"]);
      assert.equal(out.trim(), "ok");
    });

    await t.step("server and kubectl are the pinned release", async () => {
      const v = JSON.parse(await cluster.kubectlOk(["version", "-o", "json"]));
      const pinned = await pinnedVersion();
      assert.equal(v.clientVersion.gitVersion, pinned);
      assert.match(v.serverVersion.gitVersion, /^v1\.\d+\.\d+/);
      if (cluster.kubeconfig.startsWith(CACHE)) {
        // Our own control plane, not an ARANYA_TEST_KUBECONFIG cluster.
        assert.equal(v.serverVersion.gitVersion, pinned);
      }
    });

    await t.step("authorization mode includes Node and RBAC", async () => {
      // A user with no bindings is refused by RBAC. A node identity, which no
      // RBAC binding covers, may read Nodes only through the Node authorizer,
      // and may not list Secrets.
      const anon = await cluster.kubectl(["get", "pods", "-A", "--as=nobody"]);
      assert.notEqual(anon.code, 0);
      assert.match(anon.stderr, /forbidden/i);
      const node = ["--as=system:node:edge-x", "--as-group=system:nodes"];
      const canI = async (...args: string[]) =>
        (await cluster.kubectl(["auth", "can-i", ...args])).stdout.trim();
      assert.equal(await canI("get", "nodes/edge-x", ...node), "yes");
      assert.match(await canI("get", "nodes/edge-y", ...node), /^no/);
      assert.match(await canI("get", "nodes/edge-x", "--as=nobody"), /^no/);
      assert.match(await canI("list", "secrets", "-A", ...node), /^no/);
    });

    await t.step("controller-manager signs an approved CSR", async () => {
      const name = uniqueName("csr");
      const keyPem = await genKeyCsr(name);
      await cluster.kubectlOk(
        ["apply", "-f", "-"],
        JSON.stringify({
          apiVersion: "certificates.k8s.io/v1",
          kind: "CertificateSigningRequest",
          metadata: { name },
          spec: {
            request: btoa(keyPem),
            signerName: "kubernetes.io/kube-apiserver-client",
            usages: ["client auth"],
            expirationSeconds: 600,
          },
        }),
      );
      try {
        await cluster.kubectlOk(["certificate", "approve", name]);
        const cert = await eventually("the CSR to be signed", async () => {
          const out = await cluster.kubectlOk([
            "get",
            "csr",
            name,
            "-o",
            "jsonpath={.status.certificate}",
          ]);
          return out.trim() ? out.trim() : undefined;
        });
        assert.match(atob(cert), /BEGIN CERTIFICATE/);
      } finally {
        await cluster.kubectl(["delete", "csr", name, "--ignore-not-found"]);
      }
    });

    await t.step("scheduler reports a pod with no fitting node as unschedulable", async () => {
      const ns = uniqueName("sched");
      await cluster.kubectlOk(["create", "namespace", ns]);
      try {
        await cluster.kubectlOk(
          ["apply", "-n", ns, "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "p" },
            spec: {
              nodeSelector: { "aranya.test/nowhere": "true" },
              containers: [{ name: "c", image: "localhost/none:never" }],
            },
          }),
        );
        const reason = await eventually("PodScheduled=False", async () => {
          const out = await cluster.kubectlOk([
            "get",
            "pod",
            "p",
            "-n",
            ns,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="PodScheduled")].reason}',
          ]);
          return out.trim() ? out.trim() : undefined;
        });
        assert.equal(reason, "Unschedulable");
      } finally {
        await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
      }
    });
  } finally {
    await cluster.release();
  }
});

async function genKeyCsr(cn: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      "/dev/null",
      "-subj",
      `/CN=${cn}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}
