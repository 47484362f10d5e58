/**
 * KubeletServer on its own (the whole path through the API server is in
 * e2e/kubelet_e2e_test.ts): a port per node, the port naming the node,
 * client certificates checked by the TLS layer, and clear errors for an
 * unknown pod and an offline device. Authorization and the device are
 * stand-ins here (pure plumbing under test).
 */
import assert from "node:assert/strict";
import https from "node:https";
import type { V1Pod } from "@kubernetes/client-node";
import { UnavailableError } from "../../common/errors.ts";
import { makeTestCerts } from "../../e2e/link/test_certs.ts";
import { CACHE } from "../../e2e/paths.ts";
import { freePort } from "../../e2e/process.ts";
import { KubeAuthenticator } from "./authenticator.ts";
import type { Authorizer } from "./authorizer.ts";
import { KubeletServer } from "./kubelet_server.ts";

function server(opts: { firstPort: number; portCount: number; clientCa?: string }) {
  const authorized: string[] = [];
  const authorizer: Authorizer = {
    authorize: (user, node, attrs) => {
      authorized.push(`${user.name} ${attrs.verb} nodes/${attrs.subresource} ${node}`);
      return Promise.resolve();
    },
  };
  const pod: V1Pod = {
    metadata: { namespace: "ns", name: "p", uid: "u1" },
    spec: { nodeName: "node-a", containers: [{ name: "c" }] },
  };
  return {
    authorized,
    kubelet: (certificate: { key: string; cert: string }) =>
      new KubeletServer({
        hostname: "127.0.0.1",
        firstPort: opts.firstPort,
        portCount: opts.portCount,
        certificate: { current: () => certificate, onChange: () => {} },
        clientCa: opts.clientCa ?? "",
        authenticator: new KubeAuthenticator({}),
        authorizer,
        backend: {
          pod: (ns, name) => ns === "ns" && name === "p" ? pod : undefined,
          podsOn: (node) => node === "node-a" ? [pod] : [],
          device: () => undefined,
        },
      }),
  };
}

Deno.test("KubeletServer.portFor: the advertised port when free, else the lowest free; release frees it", () => {
  const s = server({ firstPort: 20000, portCount: 3 }).kubelet({ key: "", cert: "" });
  assert.equal(s.portFor("a", 20001), 20001);
  assert.equal(s.portFor("a"), 20001, "a node keeps its port");
  assert.equal(s.portFor("b", 20001), 20000, "taken: the lowest free instead");
  assert.equal(s.portFor("c", 30000), 20002, "outside the range: the lowest free");
  assert.throws(() => s.portFor("d"), UnavailableError);
  s.release("b");
  assert.equal(s.portFor("d"), 20000);
  assert.deepEqual(Object.fromEntries(s.ports), { a: 20001, c: 20002, d: 20000 });
});

Deno.test("KubeletServer: the port names the node; client certificates from the client CA; 401, 404, 503", async () => {
  const certs = await makeTestCerts(`${CACHE}/test-tls/${crypto.randomUUID()}`, ["alice"]);
  const first = freePort();
  const t = server({ firstPort: first, portCount: 2, clientCa: certs.ca });
  const kubelet = t.kubelet(certs.server);
  assert.equal(kubelet.portFor("node-a"), first);
  const ac = new AbortController();
  const running = kubelet.run(ac.signal);
  await kubelet.ready;
  const get = (path: string, client?: { cert: string; key: string }, port = first) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        { host: "127.0.0.1", port, path, ca: certs.ca, ...client },
        (res) => {
          let body = "";
          res.on("data", (c) => body += c);
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on("error", reject);
      req.end();
    });
  try {
    const anon = await get("/pods");
    assert.equal(anon.status, 401);
    assert.match(JSON.parse(anon.body).message, /No client certificate/);
    const alice = certs.clients["alice"]!;
    const pods = await get("/pods", alice);
    assert.equal(pods.status, 200, pods.body);
    assert.equal(JSON.parse(pods.body).items[0].metadata.name, "p");
    assert.deepEqual(t.authorized, ["alice get nodes/proxy node-a"]);
    const missing = await get("/containerLogs/ns/nope/c", alice);
    assert.equal(missing.status, 404);
    assert.match(JSON.parse(missing.body).message, /Pod "ns\/nope" is not on node "node-a"/);
    const offline = await get("/containerLogs/ns/p/c", alice);
    assert.equal(offline.status, 503);
    assert.match(JSON.parse(offline.body).message, /Node "node-a" is offline/);
    // A second node on the next port: the same pod is not on it.
    assert.equal(kubelet.portFor("node-b"), first + 1);
    await new Promise((r) => setTimeout(r, 100));
    const other = await get("/containerLogs/ns/p/c", alice, first + 1);
    assert.equal(other.status, 404);
    assert.match(JSON.parse(other.body).message, /is not on node "node-b"/);
    kubelet.release("node-b");
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(get("/pods", alice, first + 1), /ECONNREFUSED|refused/i);
  } finally {
    ac.abort();
    await running;
  }
});
