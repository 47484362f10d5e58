/**
 * The API clients against the real control plane: one rate limiter paces all
 * of them, requests are counted by verb, and the kubeconfig is found from a
 * file, KUBECONFIG or the in-cluster service account.
 */
import assert from "node:assert/strict";
import { CanceledError, InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { ROOT } from "@aranya/e2e/paths";
import { createMetrics } from "../metrics/aranya_metrics.ts";
import {
  apiVerb,
  loadKubeConfig,
  makeKubeClients,
  SERVICE_ACCOUNT_DIR,
  withSignal,
} from "./client.ts";
import { ApiError, KubeHttp } from "./kube_http.ts";
import { TokenBucket } from "./rate_limiter.ts";
import { testClients } from "./testing/test_clients.ts";

Deno.test("apiVerb() tells the Kubernetes verb from method and path", () => {
  const cases: [string, string, string][] = [
    ["GET", "https://h/api/v1/namespaces/default", "get"],
    ["GET", "https://h/api/v1/namespaces", "list"],
    ["GET", "https://h/api/v1/pods?labelSelector=a%3Db", "list"],
    ["GET", "https://h/api/v1/namespaces/ns/pods", "list"],
    ["GET", "https://h/api/v1/namespaces/ns/pods?watch=true&resourceVersion=5", "watch"],
    ["GET", "https://h/api/v1/namespaces/ns/pods/p", "get"],
    ["GET", "https://h/api/v1/namespaces/ns/pods/p/log", "get"],
    ["GET", "https://h/api/v1/nodes/n", "get"],
    ["GET", "https://h/apis/aranya.arhat.dev/v1alpha1/edgedevices", "list"],
    ["GET", "https://h/apis/aranya.arhat.dev/v1alpha1/namespaces/e/edgedevices", "list"],
    ["GET", "https://h/apis/aranya.arhat.dev/v1alpha1/namespaces/e/edgedevices/d", "get"],
    ["GET", "https://h/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n", "get"],
    ["GET", "https://h/apis", "get"],
    ["GET", "https://h/version", "get"],
    ["POST", "https://h/api/v1/namespaces/ns/configmaps", "create"],
    ["PUT", "https://h/api/v1/nodes/n/status", "update"],
    ["PATCH", "https://h/api/v1/namespaces/ns/pods/p/status", "patch"],
    ["DELETE", "https://h/api/v1/namespaces/ns/pods/p", "delete"],
    ["DELETE", "https://h/api/v1/namespaces/ns/pods", "deletecollection"],
    ["OPTIONS", "https://h/api", "other"],
  ];
  for (const [method, url, want] of cases) {
    assert.equal(apiVerb(method, url), want, `${method} ${url}`);
  }
});

/** The value of the sample `name` (with labels, as written) in exposition `text`. */
function sample(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

Deno.test({
  name: "all clients share one rate limiter and count requests by verb",
  fn: async () => {
    const cluster = await useCluster();
    const ns = uniqueName("kclient");
    const metrics = createMetrics({ processMetrics: false });
    const kc = loadKubeConfig({ kubeconfig: cluster.kubeconfig, env: {} });
    try {
      await cluster.kubectlOk(["create", "namespace", ns]);
      const clients = makeKubeClients(kc, {
        limiter: new TokenBucket({ qps: 5, burst: 1 }),
        metrics,
      });
      // Six reads at 5 qps with a burst of 1: the first goes at once, five wait 200 ms each.
      const start = performance.now();
      for (let i = 0; i < 6; i++) {
        const got = await clients.core.readNamespace({ name: ns });
        assert.equal(got.metadata?.name, ns);
      }
      const took = performance.now() - start;
      assert.ok(took >= 950, `6 requests at qps 5, burst 1 took ${took.toFixed(0)} ms`);
      let text = await metrics.text();
      assert.equal(sample(text, 'aranya_api_requests_total{verb="get"}'), 6);
      assert.equal(sample(text, "aranya_api_writes_total"), 0);
      // The waits are 200 ms less each request's own latency (the bucket refills meanwhile).
      assert.ok(sample(text, "aranya_api_rate_limit_wait_seconds_total") >= 0.5, text);

      // Every client goes through the same bucket: concurrent requests from four clients
      // still come out 200 ms apart.
      const t0 = performance.now();
      const stamps: number[] = [];
      const stamp = <T>(p: Promise<T>) => p.then((v) => (stamps.push(performance.now() - t0), v));
      await Promise.all([
        stamp(clients.core.createNamespacedConfigMap({
          namespace: ns,
          body: { metadata: { name: "c1" }, data: { a: "1" } },
        })),
        stamp(clients.coordination.listNamespacedLease({ namespace: ns })),
        stamp(clients.core.listNamespacedEvent({ namespace: ns })),
        stamp(
          clients.custom.listClusterCustomObject({
            group: "apiextensions.k8s.io",
            version: "v1",
            plural: "customresourcedefinitions",
          }).catch(() => undefined),
        ),
      ]);
      const spread = Math.max(...stamps) - Math.min(...stamps);
      assert.ok(spread >= 550, `4 requests from 4 clients spread over ${spread.toFixed(0)} ms`);
      const cm = await clients.core.readNamespacedConfigMap({ name: "c1", namespace: ns });
      assert.deepEqual(cm.data, { a: "1" });
      await clients.core.patchNamespacedConfigMap({
        name: "c1",
        namespace: ns,
        body: [{ op: "replace", path: "/data/a", value: "2" }],
      });
      await clients.core.deleteNamespacedConfigMap({ name: "c1", namespace: ns });
      const review = await clients.authentication.createSelfSubjectReview({ body: {} });
      assert.ok(review.status?.userInfo?.username);

      text = await metrics.text();
      assert.equal(sample(text, 'aranya_api_requests_total{verb="create"}'), 2, text);
      assert.equal(sample(text, 'aranya_api_requests_total{verb="list"}'), 3, text);
      assert.equal(sample(text, 'aranya_api_requests_total{verb="patch"}'), 1, text);
      assert.equal(sample(text, 'aranya_api_requests_total{verb="delete"}'), 1, text);
      // 6 namespace reads and the ConfigMap read.
      assert.equal(sample(text, 'aranya_api_requests_total{verb="get"}'), 7, text);
      assert.equal(sample(text, "aranya_api_writes_total"), 4, text);
    } finally {
      await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
      await cluster.release();
    }
  },
});

Deno.test("withSignal() cancels a request waiting for the rate limit", async () => {
  const cluster = await useCluster();
  try {
    const metrics = createMetrics({ processMetrics: false });
    const kc = loadKubeConfig({ kubeconfig: cluster.kubeconfig, env: {} });
    const { core } = makeKubeClients(kc, {
      limiter: new TokenBucket({ qps: 0.2, burst: 1 }),
      metrics,
    });
    await core.readNamespace({ name: "default" }, withSignal(AbortSignal.timeout(5000)));
    const start = performance.now();
    await assert.rejects(
      core.readNamespace({ name: "default" }, withSignal(AbortSignal.timeout(300))),
      CanceledError,
    );
    const took = performance.now() - start;
    // Canceled by its signal, not served when the next token came (5 s at 0.2 qps).
    assert.ok(took >= 250 && took < 4_500, `canceled after ${took.toFixed(0)} ms`);
    // Only the request that was sent is counted.
    assert.equal(sample(await metrics.text(), 'aranya_api_requests_total{verb="get"}'), 1);
  } finally {
    await cluster.release();
  }
});

Deno.test("loadKubeConfig() takes a file, else KUBECONFIG, and says what is missing", async () => {
  const cluster = await useCluster();
  const dir = `${ROOT}/.cache/test-state/${crypto.randomUUID()}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    const server = /^https:\/\/127\.0\.0\.1:\d+$/;
    const fromFile = loadKubeConfig({ kubeconfig: cluster.kubeconfig, env: {} });
    assert.match(fromFile.server, server);
    const fromEnv = loadKubeConfig({ env: { KUBECONFIG: cluster.kubeconfig } });
    assert.match(fromEnv.server, server);
    // As kubectl does, KUBECONFIG lists files to merge and skips missing ones.
    const merged = loadKubeConfig({ env: { KUBECONFIG: `/nonexistent/a:${cluster.kubeconfig}` } });
    assert.match(merged.server, server);
    assert.throws(
      () => loadKubeConfig({ env: { KUBECONFIG: "/nonexistent/a:/nonexistent/b" } }),
      (err: unknown) =>
        err instanceof NotFoundError && err.message.includes('"/nonexistent/a:/nonexistent/b"'),
    );
    // The explicit file wins over KUBECONFIG, and must exist.
    assert.throws(
      () =>
        loadKubeConfig({ kubeconfig: "/nonexistent/kc", env: { KUBECONFIG: cluster.kubeconfig } }),
      (err: unknown) => err instanceof NotFoundError && err.message.includes('"/nonexistent/kc"'),
    );
    assert.throws(() => loadKubeConfig({ env: {} }), (err: unknown) => {
      assert.ok(err instanceof NotFoundError);
      assert.match(err.message, /KUBERNETES_SERVICE_HOST/);
      return true;
    });
    await Deno.writeTextFile(`${dir}/bad.yaml`, "clusters: [nope");
    assert.throws(() => loadKubeConfig({ kubeconfig: `${dir}/bad.yaml` }), InvalidInputError);
    await Deno.writeTextFile(`${dir}/empty.yaml`, "apiVersion: v1\nkind: Config\n");
    assert.throws(() => loadKubeConfig({ kubeconfig: `${dir}/empty.yaml` }), InvalidInputError);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await cluster.release();
  }
});

Deno.test("loadKubeConfig() in a cluster uses the service account token and CA", async () => {
  const cluster = await useCluster();
  const ns = uniqueName("incluster");
  const dir = `${ROOT}/.cache/test-state/${crypto.randomUUID()}`;
  try {
    await cluster.kubectlOk(["create", "namespace", ns]);
    await cluster.kubectlOk(["create", "serviceaccount", "aranya", "-n", ns]);
    const token = (await cluster.kubectlOk(["create", "token", "aranya", "-n", ns])).trim();
    const admin = loadKubeConfig({ kubeconfig: cluster.kubeconfig, env: {} });
    assert.ok(admin.caPem, "the test kubeconfig embeds its CA");
    const url = new URL(admin.server);
    const saDir = `${dir}${SERVICE_ACCOUNT_DIR}`;
    await Deno.mkdir(saDir, { recursive: true });
    await Deno.writeTextFile(`${saDir}/token`, token);
    await Deno.writeTextFile(`${saDir}/ca.crt`, admin.caPem);
    await Deno.writeTextFile(`${saDir}/namespace`, ns);

    const kc = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port },
      inClusterPathPrefix: dir,
    });
    assert.equal(kc.server, `https://${url.hostname}:${url.port}`);
    assert.equal(kc.namespace, ns);
    assert.equal(kc.tokenFile, `${saDir}/token`);
    const clients = makeKubeClients(kc, { limiter: new TokenBucket({ qps: 50, burst: 10 }) });
    const review = await clients.authentication.createSelfSubjectReview({ body: {} });
    assert.equal(review.status?.userInfo?.username, `system:serviceaccount:${ns}:aranya`);

    // The token file is read again as it rotates (here: replaced by a token the server refuses).
    const http = new KubeHttp(kc, { tokenRefreshMs: 0 });
    const whoAmI = {
      method: "POST",
      path: "/apis/authentication.k8s.io/v1/selfsubjectreviews",
      body: {},
    } as const;
    await http.request(whoAmI);
    await Deno.writeTextFile(`${saDir}/token`, "not-a-token");
    await assert.rejects(
      http.request(whoAmI),
      (err: unknown) => err instanceof ApiError && err.code === 401,
    );
    http.close();

    // Without the token file the error names it.
    assert.throws(
      () =>
        loadKubeConfig({
          env: { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port },
          inClusterPathPrefix: `${dir}/elsewhere`,
        }),
      (err: unknown) => err instanceof NotFoundError && /service account token/.test(err.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
    await cluster.release();
  }
});

Deno.test("the kubeconfig's client certificate authenticates every request", async () => {
  const cluster = await useCluster();
  try {
    const clients = testClients(cluster.kubeconfig);
    assert.ok(clients.access.certPem && clients.access.keyPem, "the test user has a certificate");
    const review = await clients.authentication.createSelfSubjectReview({ body: {} });
    assert.ok(review.status?.userInfo?.groups?.includes("system:masters"), JSON.stringify(review));
    // Many in a row over the kept connections.
    for (let i = 0; i < 20; i++) await clients.core.readNamespace({ name: "default" });
    // A non-2xx answer is an ApiError with the status and the server's message.
    await assert.rejects(
      clients.core.readNamespace({ name: "no-such-namespace-here" }),
      (err: unknown) =>
        err instanceof ApiError && err.code === 404 && /not found/.test(err.message),
    );
    clients.http.close();
  } finally {
    await cluster.release();
  }
});

Deno.test("loadKubeConfig() refuses what aranya does not support, by name", async () => {
  const dir = `${ROOT}/.cache/test-state/${crypto.randomUUID()}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    const write = (name: string, user: string, cluster = "server: https://127.0.0.1:6443") => {
      const text = [
        "apiVersion: v1",
        "kind: Config",
        "current-context: c",
        "contexts: [{ name: c, context: { cluster: k, user: u } }]",
        `clusters: [{ name: k, cluster: { ${cluster} } }]`,
        `users: [{ name: u, user: { ${user} } }]`,
      ].join("\n");
      Deno.writeTextFileSync(`${dir}/${name}`, text);
      return `${dir}/${name}`;
    };
    const refused = (file: string, field: string) =>
      assert.throws(
        () => loadKubeConfig({ kubeconfig: file, env: {} }),
        (err: unknown) => err instanceof InvalidInputError && err.message.includes(`"${field}"`),
      );
    refused(write("exec.yaml", "exec: { command: aws }"), "exec");
    refused(write("provider.yaml", "auth-provider: { name: gcp }"), "auth-provider");
    refused(
      write("insecure.yaml", "token: t", "server: https://h:1, insecure-skip-tls-verify: true"),
      "insecure-skip-tls-verify",
    );
    refused(write("nofile.yaml", "client-certificate: missing.crt"), "client-certificate");
    // Relative files are found beside the kubeconfig; a token file is kept as a path.
    Deno.writeTextFileSync(`${dir}/ca.crt`, "CA PEM");
    const ok = loadKubeConfig({
      kubeconfig: write(
        "ok.yaml",
        "tokenFile: tok",
        "server: https://h:1/, certificate-authority: ca.crt",
      ),
      env: {},
    });
    assert.equal(ok.server, "https://h:1");
    assert.equal(ok.caPem, "CA PEM");
    assert.equal(ok.tokenFile, `${dir}/tok`);
    assert.equal(ok.namespace, "default");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
