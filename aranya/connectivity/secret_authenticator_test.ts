/**
 * The Secret-backed device authenticator against the real API server: the
 * right token passes, a wrong one fails, a rotated one passes after a fresh
 * read, a device without a Secret costs one read per dial burst (not two per
 * dial), and `forget` drops a removed device's cached token at once.
 */
import assert from "node:assert/strict";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { uniqueName, useCluster } from "../../e2e/fixtures.ts";
import { credentialsSecretName } from "../edgedevice/types.ts";
import { SecretAuthenticator } from "./secret_authenticator.ts";

Deno.test("secret authenticator: tokens, rotation, unknown devices, forget", async () => {
  const cluster = await useCluster();
  const ns = uniqueName("auth");
  const kc = new KubeConfig();
  kc.loadFromFile(cluster.kubeconfig);
  const real = kc.makeApiClient(CoreV1Api);
  let reads = 0;
  // The real client, with its Secret reads counted.
  const core = new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === "readNamespacedSecret") {
        return (...args: Parameters<CoreV1Api["readNamespacedSecret"]>) => {
          reads++;
          return target.readNamespacedSecret(...args);
        };
      }
      return Reflect.get(target, prop, receiver);
    },
  });
  const auth = new SecretAuthenticator({ core, cacheMs: 60_000 });
  const secret = (token: string) =>
    JSON.stringify({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: credentialsSecretName("d1"), namespace: ns },
      stringData: { token },
    });
  try {
    await cluster.kubectlOk(["create", "namespace", ns]);
    await cluster.kubectlOk(["apply", "-f", "-"], secret("first"));
    await auth.authenticate(`${ns}/d1`, { token: "first" });
    await auth.authenticate(`${ns}/d1`, { token: "first" });
    assert.equal(reads, 1, "the token is cached");
    await assert.rejects(
      auth.authenticate(`${ns}/d1`, { token: "nope" }),
      new RegExp(`Device "${ns}/d1" presented no valid credentials`),
    );
    await cluster.kubectlOk(["apply", "-f", "-"], secret("second"));
    await auth.authenticate(`${ns}/d1`, { token: "second" }); // rotated: read again
    reads = 0;
    for (let i = 0; i < 5; i++) {
      await assert.rejects(
        auth.authenticate(`${ns}/ghost`, { token: "x" }),
        /no valid credentials/,
      );
    }
    assert.equal(reads, 1, "an unknown device is read once, then cached briefly");
    await cluster.kubectlOk(["delete", "secret", credentialsSecretName("d1"), "-n", ns]);
    auth.forget(`${ns}/d1`);
    await assert.rejects(
      auth.authenticate(`${ns}/d1`, { token: "second" }),
      /no valid credentials/,
    );
  } finally {
    await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
    await cluster.release();
  }
});
