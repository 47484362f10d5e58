/**
 * Bearer tokens through the real API server's TokenReview, decisions through
 * its SubjectAccessReview, and the cluster's client CA from
 * kube-system/extension-apiserver-authentication.
 */
import assert from "node:assert/strict";
import type { TLSSocket } from "node:tls";
import { ForbiddenError, UnauthenticatedError } from "@aranya/common/errors";
import { uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { KubeAuthenticator, loadClientCa } from "./authenticator.ts";
import { SubjectAccessReviewAuthorizer } from "./authorizer.ts";
import { testClients } from "../kube/testing/test_clients.ts";

/** A socket without a client certificate. */
const noCert = {
  authorized: false,
  getPeerCertificate: () => ({}),
} as unknown as TLSSocket;

Deno.test({
  name: "kubelet auth: TokenReview, SubjectAccessReview on nodes/<subresource>, the client CA",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const ns = uniqueName("kauth");
    try {
      const kc = testClients(cluster.kubeconfig);
      await cluster.kubectlOk(["create", "namespace", ns]);
      await cluster.kubectlOk(["-n", ns, "create", "serviceaccount", "viewer"]);
      await cluster.kubectlOk([
        "create",
        "clusterrolebinding",
        `${ns}-stats`,
        "--clusterrole=system:kubelet-api-admin",
        `--serviceaccount=${ns}:viewer`,
      ]);
      await cluster.kubectlOk(["-n", ns, "create", "serviceaccount", "nobody"]);
      const token = (name: string) => cluster.kubectlOk(["-n", ns, "create", "token", name]);

      const authn = new KubeAuthenticator({
        authentication: kc.authentication,
      });
      const viewer = await authn.authenticate(noCert, `Bearer ${(await token("viewer")).trim()}`);
      assert.equal(viewer.name, `system:serviceaccount:${ns}:viewer`);
      assert.ok(viewer.groups.includes("system:serviceaccounts"));
      await assert.rejects(
        authn.authenticate(noCert, "Bearer not-a-token"),
        (e) => e instanceof UnauthenticatedError && /bearer token was not accepted/.test(e.message),
      );
      await assert.rejects(authn.authenticate(noCert, undefined), UnauthenticatedError);

      const authz = new SubjectAccessReviewAuthorizer({
        authorization: kc.authorization,
      });
      await authz.authorize(viewer, "some-node", { verb: "create", subresource: "proxy" });
      await authz.authorize(viewer, "some-node", { verb: "get", subresource: "stats" });
      const nobody = await authn.authenticate(noCert, `Bearer ${(await token("nobody")).trim()}`);
      await assert.rejects(
        authz.authorize(nobody, "some-node", { verb: "get", subresource: "stats" }),
        (e) =>
          e instanceof ForbiddenError &&
          e.message.includes(
            `"system:serviceaccount:${ns}:nobody" may not get resource "nodes/stats" of node "some-node"`,
          ),
      );

      const ca = await loadClientCa(kc.core);
      assert.match(ca, /-----BEGIN CERTIFICATE-----/);
    } finally {
      await cluster.kubectl(["delete", "clusterrolebinding", `${ns}-stats`, "--ignore-not-found"]);
      await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
      await cluster.release();
    }
  },
});
