/**
 * The aranya harness: the minted kubeconfig is the ServiceAccount
 * aranya-system/aranya with deploy/aranya's RBAC (it lists Nodes, it cannot
 * create ClusterRoles); aranya started through spawnAranya with it serves
 * /healthz and /readyz, provisions an EdgeDevice's Node and Secret and cleans
 * them up on delete (so the RBAC is enough for the real program), stops on
 * SIGTERM, and a bad config makes it exit with the problem in its log.
 */
import assert from "node:assert/strict";
import {
  ARANYA_E2E_DIR,
  ARANYA_USER,
  aranyaConfigYaml,
  aranyaKubeconfig,
  kubectlAs,
  spawnAranya,
  waitAranyaReady,
} from "./aranya_harness.ts";
import { applyCrds, eventually, uniqueName, useCluster } from "./fixtures.ts";
import { testTls } from "./link/test_tls.ts";
import { freePort, isAlive, sleep } from "./process.ts";

Deno.test("the minted kubeconfig is aranya's ServiceAccount with its RBAC", async () => {
  const cluster = await useCluster();
  const dir = `${ARANYA_E2E_DIR}/${crypto.randomUUID().slice(0, 8)}`;
  try {
    const kc = await aranyaKubeconfig(cluster, dir);
    assert.equal((await Deno.stat(kc)).mode! & 0o077, 0, "the token file is private");
    // Idempotent: a second call applies the same objects and mints another token.
    assert.equal(await aranyaKubeconfig(cluster, dir), kc);

    const who = await kubectlAs(kc, [
      "auth",
      "whoami",
      "-o",
      "jsonpath={.status.userInfo.username}",
    ]);
    assert.equal(who.code, 0, who.stderr);
    assert.equal(who.stdout, ARANYA_USER);

    const nodes = await kubectlAs(kc, ["get", "nodes", "-o", "name"]);
    assert.equal(nodes.code, 0, nodes.stderr);

    const role = await kubectlAs(kc, [
      "create",
      "clusterrole",
      uniqueName("x"),
      "--verb=get",
      "--resource=pods",
    ]);
    assert.notEqual(role.code, 0, "aranya must not create ClusterRoles");
    assert.match(role.stderr, /forbidden/i);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await cluster.release();
  }
});

Deno.test({
  name: "spawnAranya runs aranya with the deploy/ RBAC; it provisions and cleans up a device",
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const dir = `${ARANYA_E2E_DIR}/${crypto.randomUUID().slice(0, 8)}`;
    const ns = uniqueName("harness");
    const name = uniqueName("dev");
    let aranya: Awaited<ReturnType<typeof spawnAranya>> | undefined;
    try {
      await applyCrds(cluster);
      await cluster.kubectlOk(["create", "namespace", ns]);
      const tls = await testTls();
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/tls.crt`, tls.cert);
      await Deno.writeTextFile(`${dir}/tls.key`, tls.key);
      const httpPort = freePort();
      await Deno.writeTextFile(
        `${dir}/config.yaml`,
        aranyaConfigYaml({
          kubeconfig: await aranyaKubeconfig(cluster, dir),
          namespaces: [ns],
          httpPort,
          websocket: { port: freePort(), certFile: `${dir}/tls.crt`, keyFile: `${dir}/tls.key` },
          kubelet: { port: freePort() },
        }),
      );
      aranya = await spawnAranya({ config: `${dir}/config.yaml` });
      await waitAranyaReady(aranya, httpPort, 60_000);
      const healthz = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
      await healthz.body?.cancel();
      assert.equal(healthz.status, 200);

      await cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "aranya.arhat.dev/v1alpha1",
          kind: "EdgeDevice",
          metadata: { name },
        }),
      );
      await eventually("the Node and the credentials Secret", async () => {
        const node = await cluster.kubectl(["get", "node", name, "-o", "name"]);
        const secret = await cluster.kubectl([
          "get",
          "secret",
          "-n",
          ns,
          `${name}-arhat-credentials`,
        ]);
        return node.code === 0 && secret.code === 0 ? true : undefined;
      }, 30_000);
      await cluster.kubectlOk(["delete", "ed", name, "-n", ns, "--timeout=30s"]);
      await eventually("the Node to be gone", async () => {
        const node = await cluster.kubectl(["get", "node", name, "-o", "name"]);
        return node.code !== 0 && /NotFound/.test(node.stderr) ? true : undefined;
      }, 30_000);
      const log = await aranya.log();
      assert.doesNotMatch(log, /forbidden/i, "aranya hit an RBAC refusal");

      await aranya.kill("SIGTERM");
      const deadline = Date.now() + 15_000;
      while (isAlive(aranya.pid) && Date.now() < deadline) await sleep(100);
      assert.equal(isAlive(aranya.pid), false, "aranya stops on SIGTERM");
      assert.equal(await aranya.exited, 0, await aranya.log());
    } finally {
      await aranya?.stop(5_000);
      await cluster.kubectl(["delete", "ed", "--all", "-n", ns, "--wait=false"]);
      await cluster.kubectl(["delete", "node", name, "--ignore-not-found"]);
      await cluster.kubectl(["delete", "namespace", ns, "--ignore-not-found", "--wait=false"]);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await cluster.release();
    }
  },
});

Deno.test({
  name: "spawnAranya: a bad config makes aranya exit non-zero, the problem in its log",
  fn: async () => {
    const dir = `${ARANYA_E2E_DIR}/${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(dir, { recursive: true });
    try {
      await Deno.writeTextFile(`${dir}/config.yaml`, "bogusField: 1\nlinks: {}\n");
      const aranya = await spawnAranya({ config: `${dir}/config.yaml`, logFile: `${dir}/log` });
      const code = await Promise.race([aranya.exited, sleep(30_000).then(() => "timeout")]);
      await aranya.stop(1_000);
      assert.notEqual(code, "timeout", "aranya kept running with a bad config");
      assert.notEqual(code, 0);
      assert.match(await aranya.log(), /bogusField/);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
