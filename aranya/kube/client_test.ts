/**
 * The API clients against the real control plane: one rate limiter paces all
 * of them, requests are counted by verb, and the kubeconfig is found from a
 * file, KUBECONFIG or the in-cluster service account.
 */
import assert from "node:assert/strict";
import https from "node:https";
import {
  AuthenticationV1Api,
  HttpMethod,
  KubeConfig,
  RequestContext,
} from "@kubernetes/client-node";
import { CanceledError, InvalidInputError, NotFoundError } from "../../common/errors.ts";
import { uniqueName, useCluster } from "../../e2e/fixtures.ts";
import { ROOT } from "../../e2e/paths.ts";
import { createMetrics } from "../metrics/registry.ts";
import {
  apiVerb,
  loadKubeConfig,
  makeKubeClients,
  SERVICE_ACCOUNT_DIR,
  SharedAgentAuth,
  withSignal,
} from "./client.ts";
import { TokenBucket } from "./rate_limiter.ts";

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
        stamp(clients.events.listNamespacedEvent({ namespace: ns })),
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
      const cm = await clients.objects.read({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "c1", namespace: ns },
      });
      assert.deepEqual((cm as { data?: Record<string, string> }).data, { a: "1" });
      await clients.core.patchNamespacedConfigMap({
        name: "c1",
        namespace: ns,
        body: [{ op: "replace", path: "/data/a", value: "2" }],
      });
      await clients.core.deleteNamespacedConfigMap({ name: "c1", namespace: ns });
      // A client made later shares the limiter and the counters too.
      const auth = clients.make(AuthenticationV1Api);
      const review = await auth.createSelfSubjectReview({ body: {} });
      assert.ok(review.status?.userInfo?.username);

      text = await metrics.text();
      assert.equal(sample(text, 'aranya_api_requests_total{verb="create"}'), 2, text);
      assert.equal(sample(text, 'aranya_api_requests_total{verb="list"}'), 3, text);
      assert.equal(sample(text, 'aranya_api_requests_total{verb="patch"}'), 1, text);
      assert.equal(sample(text, 'aranya_api_requests_total{verb="delete"}'), 1, text);
      // 6 namespace reads, the object read and the API discovery the object client does.
      assert.ok(sample(text, 'aranya_api_requests_total{verb="get"}') >= 7, text);
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
    assert.ok(took >= 250 && took < 2000, `canceled after ${took.toFixed(0)} ms`);
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
    assert.match(fromFile.getCurrentCluster()?.server ?? "", server);
    const fromEnv = loadKubeConfig({ env: { KUBECONFIG: cluster.kubeconfig } });
    assert.match(fromEnv.getCurrentCluster()?.server ?? "", server);
    // As kubectl does, KUBECONFIG lists files to merge and skips missing ones.
    const merged = loadKubeConfig({ env: { KUBECONFIG: `/nonexistent/a:${cluster.kubeconfig}` } });
    assert.match(merged.getCurrentCluster()?.server ?? "", server);
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
    const admin = new KubeConfig();
    admin.loadFromFile(cluster.kubeconfig);
    const caData = admin.getCurrentCluster()?.caData;
    assert.ok(caData, "the test kubeconfig embeds its CA");
    const url = new URL(admin.getCurrentCluster()!.server);
    const saDir = `${dir}${SERVICE_ACCOUNT_DIR}`;
    await Deno.mkdir(saDir, { recursive: true });
    await Deno.writeTextFile(`${saDir}/token`, token);
    await Deno.writeTextFile(`${saDir}/ca.crt`, atob(caData));
    await Deno.writeTextFile(`${saDir}/namespace`, ns);

    const kc = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port },
      inClusterPathPrefix: dir,
    });
    assert.equal(kc.getCurrentCluster()?.server, `https://${url.hostname}:${url.port}`);
    assert.equal(kc.getContextObject(kc.getCurrentContext())?.namespace, ns);
    const clients = makeKubeClients(kc, { limiter: new TokenBucket({ qps: 50, burst: 10 }) });
    const review = await clients.make(AuthenticationV1Api).createSelfSubjectReview({ body: {} });
    assert.equal(review.status?.userInfo?.username, `system:serviceaccount:${ns}:aranya`);

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

Deno.test("every request of the clients shares one keep-alive agent with the kubeconfig's TLS", async () => {
  const cluster = await useCluster();
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    const auth = new SharedAgentAuth(kc);
    const server = kc.getCurrentCluster()!.server;
    const a = new RequestContext(`${server}/api`, HttpMethod.GET);
    const b = new RequestContext(`${server}/apis`, HttpMethod.GET);
    await auth.applySecurityAuthentication(a);
    await auth.applySecurityAuthentication(b);
    const agent = a.getAgent() as https.Agent & { options: https.AgentOptions };
    assert.ok(agent, "an agent is set");
    assert.equal(b.getAgent(), agent, "the same agent for every request");
    assert.equal(agent.options.keepAlive, true);
    assert.ok(agent.options.ca, "the cluster CA is kept");
    assert.ok(agent.options.cert && agent.options.key, "the client certificate is kept");
    // And requests through it work (many in a row, over the pooled connection).
    const clients = makeKubeClients(kc, { limiter: new TokenBucket({ qps: 1000, burst: 1000 }) });
    for (let i = 0; i < 20; i++) await clients.core.readNamespace({ name: "default" });
  } finally {
    await cluster.release();
  }
});
