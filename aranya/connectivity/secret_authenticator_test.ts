/**
 * The device authenticator against the real API server: a device is accepted
 * only while its EdgeDevice exists and only with credentials that EdgeDevice
 * owns. An unknown device costs no read; a Secret that merely has the right
 * name (no owner reference, or one to an older EdgeDevice of the same name) is
 * refused; tokens are cached, a rotated one passes after a fresh read, wrong
 * ones are remembered by digest so a flood of them costs a bounded number of
 * reads and memory; a client certificate passes only when its CN is exactly
 * "<namespace>/<name>".
 */
import assert from "node:assert/strict";
import type { CoreApi } from "../kube/apis.ts";
import { applyCrds, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { credentialsSecretName, type EdgeDevice } from "../edgedevice/types.ts";
import { SecretAuthenticator } from "./secret_authenticator.ts";
import { testClients } from "../kube/testing/test_clients.ts";

Deno.test("secret authenticator: EdgeDevice and owner checks, tokens, rotation, floods, certificates", async () => {
  const cluster = await useCluster();
  const ns = uniqueName("auth");
  const kc = testClients(cluster.kubeconfig);
  const real = kc.core;
  let reads = 0;
  // The real client, with its Secret reads counted.
  const core = new Proxy(real, {
    get(target, prop, receiver) {
      if (prop === "readNamespacedSecret") {
        return (...args: Parameters<CoreApi["readNamespacedSecret"]>) => {
          reads++;
          return target.readNamespacedSecret(...args);
        };
      }
      return Reflect.get(target, prop, receiver);
    },
  });
  const devices = new Map<string, EdgeDevice>();
  const auth = new SecretAuthenticator({
    core,
    devices: (key) => devices.get(key),
    cacheMs: 60_000,
    refreshMs: 0,
    maxEntries: 100,
  });
  const edgeDevice = async (name: string): Promise<EdgeDevice> => {
    await cluster.kubectlOk(
      ["apply", "-n", ns, "-f", "-"],
      JSON.stringify({
        apiVersion: "aranya.arhat.dev/v1alpha1",
        kind: "EdgeDevice",
        metadata: { name },
      }),
    );
    const ed = JSON.parse(await cluster.kubectlOk(["get", "ed", name, "-n", ns, "-o", "json"]));
    devices.set(`${ns}/${name}`, ed);
    return ed;
  };
  const secret = (name: string, token: string, ownerUid?: string) =>
    JSON.stringify({
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: credentialsSecretName(name),
        namespace: ns,
        ownerReferences: ownerUid
          ? [{
            apiVersion: "aranya.arhat.dev/v1alpha1",
            kind: "EdgeDevice",
            name,
            uid: ownerUid,
            controller: true,
          }]
          : [],
      },
      stringData: { token },
    });
  const refused = /presented no valid credentials/;
  try {
    await applyCrds(cluster);
    await cluster.kubectlOk(["create", "namespace", ns]);

    // No EdgeDevice: refused without reading anything, even with a Secret of the right name.
    await cluster.kubectlOk(["apply", "-f", "-"], secret("ghost", "t"));
    for (let i = 0; i < 20; i++) {
      await assert.rejects(auth.authenticate(`${ns}/ghost`, { token: "t" }), refused);
    }
    await assert.rejects(
      auth.authenticate(`${ns}/ghost`, { certificateCN: `${ns}/ghost` }),
      refused,
      "a certificate does not stand in for a missing EdgeDevice",
    );
    assert.equal(reads, 0, "an unknown device costs no API request");

    // An EdgeDevice, and a Secret that merely has the right name: refused.
    const d1 = await edgeDevice("d1");
    await cluster.kubectlOk(["apply", "-f", "-"], secret("d1", "first"));
    await assert.rejects(auth.authenticate(`${ns}/d1`, { token: "first" }), refused);
    // Owned by another uid (an older EdgeDevice of that name): refused too.
    await cluster.kubectlOk(["apply", "-f", "-"], secret("d1", "first", crypto.randomUUID()));
    await assert.rejects(auth.authenticate(`${ns}/d1`, { token: "first" }), refused);

    // Owned by the EdgeDevice: accepted, then served from the cache. (A token refused before
    // stays refused for `negativeMs`, so the owned Secret gets a new one.)
    await cluster.kubectlOk(["apply", "-f", "-"], secret("d1", "owned", d1.metadata!.uid));
    reads = 0;
    await auth.authenticate(`${ns}/d1`, { token: "owned" });
    await auth.authenticate(`${ns}/d1`, { token: "owned" });
    assert.equal(reads, 1, "the token is cached");

    // A wrong token: refused, and remembered (no further reads for it).
    await assert.rejects(auth.authenticate(`${ns}/d1`, { token: "nope" }), refused);
    const afterWrong = reads;
    await assert.rejects(auth.authenticate(`${ns}/d1`, { token: "nope" }), refused);
    assert.equal(reads, afterWrong, "a wrong token is refused from the negative cache");

    // Rotated: the new token passes after one fresh read.
    await cluster.kubectlOk(["apply", "-f", "-"], secret("d1", "second", d1.metadata!.uid));
    await auth.authenticate(`${ns}/d1`, { token: "second" });

    // A flood of random tokens against a known device with a refresh interval: bounded reads
    // and bounded memory.
    const flood = new SecretAuthenticator({
      core,
      devices: (key) => devices.get(key),
      maxEntries: 50,
    });
    await flood.authenticate(`${ns}/d1`, { token: "second" });
    reads = 0;
    await Promise.all(
      Array.from(
        { length: 1000 },
        () =>
          assert.rejects(
            flood.authenticate(`${ns}/d1`, { token: crypto.randomUUID() }),
            refused,
          ),
      ),
    );
    assert.equal(reads, 0, "wrong tokens within the refresh interval cost no read");
    assert.ok(flood.cached <= 51, `bounded caches: ${flood.cached} entries`);

    // Client certificates (verified by the listener against the device CA): the CN must be
    // exactly "<namespace>/<name>".
    await auth.authenticate(`${ns}/d1`, { certificateCN: `${ns}/d1` });
    for (const cn of ["d1", `system:node:d1`, `other/d1`, `${ns}/d10`]) {
      await assert.rejects(auth.authenticate(`${ns}/d1`, { certificateCN: cn }), refused, cn);
    }

    // The EdgeDevice gone (deleted, or recreated with a new uid): the old credentials stop.
    devices.delete(`${ns}/d1`);
    await assert.rejects(auth.authenticate(`${ns}/d1`, { token: "second" }), refused);
    devices.set(`${ns}/d1`, { ...d1, metadata: { ...d1.metadata, uid: crypto.randomUUID() } });
    await assert.rejects(auth.authenticate(`${ns}/d1`, { token: "second" }), refused);
  } finally {
    await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
    await cluster.release();
  }
});

Deno.test("secret authenticator: a device whose Node trails in the cache is held, not refused", async () => {
  const key = "edge/dev-1";
  const ed: EdgeDevice = { metadata: { namespace: "edge", name: "dev-1", uid: "u-1" } };
  let known = false;
  let pending = true;
  // No Secret read in this test: the certificate path needs none, and an unknown device none.
  const core = new Proxy({} as CoreApi, {
    get: () => () => Promise.reject(new Error("no API in this test")),
  });
  const auth = new SecretAuthenticator({
    core,
    devices: (k) => (k === key && known ? ed : undefined),
    pending: (k) => k === key && pending,
    pendingMs: 2000,
  });
  // Known after 300 ms: the dial waits and is accepted.
  setTimeout(() => {
    known = true;
    pending = false;
  }, 300);
  await auth.authenticate(key, { certificateCN: key });
  // A token this replica just wrote into the device's Secret is known without a read (the API
  // refuses everything here); another token is still refused.
  auth.prime(key, "u-1", "fresh-token");
  await auth.authenticate(key, { token: "fresh-token" });
  await assert.rejects(auth.authenticate(key, { token: "other-token" }));
  // Never known: refused once the wait is over; other devices are refused at once.
  known = false;
  pending = true;
  const short = new SecretAuthenticator({
    core,
    devices: () => undefined,
    pending: (k) => k === key,
    pendingMs: 300,
  });
  const t0 = Date.now();
  await assert.rejects(short.authenticate(key, { certificateCN: key }), /no valid credentials/);
  assert.ok(Date.now() - t0 >= 250, "it waited");
  // Refused without waiting: measured against a wait of a minute, so a loaded machine cannot
  // blur the difference.
  const long = new SecretAuthenticator({
    core,
    devices: () => undefined,
    pending: (k) => k === key,
    pendingMs: 60_000,
  });
  const t1 = Date.now();
  await assert.rejects(long.authenticate("edge/other", { certificateCN: "edge/other" }));
  assert.ok(Date.now() - t1 < 30_000, "not pending: refused at once");
  // No room to wait: refused at once.
  const full = new SecretAuthenticator({
    core,
    devices: () => undefined,
    pending: () => true,
    pendingMs: 60_000,
    maxPending: 0,
  });
  const t2 = Date.now();
  await assert.rejects(full.authenticate(key, { certificateCN: key }));
  assert.ok(Date.now() - t2 < 30_000);
});
