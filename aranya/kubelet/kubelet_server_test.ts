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
import { UnavailableError } from "@aranya/common/errors";
import { makeTestCerts } from "@aranya/e2e/link/test_certs";
import { eventually } from "@aranya/e2e/fixtures";
import { CACHE } from "@aranya/e2e/paths";
import { freePort, freePortRange } from "@aranya/e2e/process";
import { KubeAuthenticator } from "./authenticator.ts";
import type { Authorizer } from "./authorizer.ts";
import { KubeletServer } from "./kubelet_server.ts";
import { concatBytes } from "@aranya/common/bytes";
import { memoryLinkPair } from "@aranya/common/testing/memory_link";
import { SessionClient } from "@aranya/common/session/session_client";
import { SessionServer } from "@aranya/common/session/session_server";
import { echoDispatcher } from "@aranya/common/session/testing/echo_dispatcher";
import { dataFrame, readFrames, type SpdyFrame, SynStreamWriter } from "./testing/raw_spdy.ts";

function server(opts: {
  firstPort: number;
  portCount: number;
  clientCa?: string;
  device?: SessionClient;
  timeouts?: { creationMs?: number; idleMs?: number };
}) {
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
          device: () => opts.device,
          isVirtualPod: () => false,
          refusal: () => undefined,
        },
        timeouts: opts.timeouts,
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
  const first = freePortRange(2); // both ports: node-b takes the second
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
    // The new port listens soon after (in the background): until then a connection is refused.
    const other = await eventually(
      "node-b's port to listen",
      () =>
        get("/containerLogs/ns/p/c", alice, first + 1).catch((err) => {
          if (!/ECONNREFUSED/.test(String(err))) throw err;
          return undefined;
        }),
      10_000,
    );
    assert.equal(other.status, 404);
    assert.match(JSON.parse(other.body).message, /is not on node "node-b"/);
    kubelet.release("node-b");
    await eventually("node-b's port to close", () =>
      get("/pods", alice, first + 1).then(
        () => undefined,
        (err) => /ECONNREFUSED|refused/i.test(String(err)) ? true : undefined,
      ), 10_000);
  } finally {
    ac.abort();
    await running;
  }
});

/** A TLS connection to the kubelet port upgraded to SPDY/3.1, read frame by frame. */
async function spdyExec(
  port: number,
  path: string,
  tls: { ca: string; cert: string; key: string },
) {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [tls.ca],
    cert: tls.cert,
    key: tls.key,
  });
  await conn.write(new TextEncoder().encode(
    `POST ${path} HTTP/1.1\r\nHost: kubelet\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n` +
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
  ));
  let buf: Uint8Array = new Uint8Array(0);
  const chunk = new Uint8Array(65536);
  const more = async (): Promise<boolean> => {
    const n = await conn.read(chunk).catch(() => null);
    if (n === null) return false;
    buf = concatBytes([buf, chunk.subarray(0, n)]);
    return true;
  };
  for (;;) {
    const text = new TextDecoder().decode(buf);
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      assert.match(text, /^HTTP\/1\.1 101 /, text);
      buf = buf.subarray(end + 4);
      break;
    }
    if (!(await more())) throw new Error("connection closed before the upgrade");
  }
  const writer = new SynStreamWriter();
  const frames: SpdyFrame[] = [];
  return {
    open: async (id: number, type: string) =>
      void await conn.write(await writer.frame(id, { streamtype: type })),
    send: async (id: number, data: string, fin = false) =>
      void await conn.write(dataFrame(id, new TextEncoder().encode(data), fin)),
    /** Reads until `done(frames)` or the connection closes; resolves whether it closed. */
    async until(done: (frames: SpdyFrame[]) => boolean): Promise<boolean> {
      for (;;) {
        const r = readFrames(buf);
        buf = r.rest;
        frames.push(...r.frames);
        if (done(frames)) return false;
        if (!(await more())) return true;
      }
    },
    dataOf(stream: number): string {
      return frames.filter((f) => !f.control && f.stream === stream)
        .map((f) => new TextDecoder().decode((f as { data: Uint8Array }).data)).join("");
    },
    close() {
      writer.close();
      try {
        conn.close();
      } catch { /* closed */ }
    },
  };
}

Deno.test("KubeletServer SPDY exec: output and exit status, the creation timeout, the idle timeout", async () => {
  const certs = await makeTestCerts(`${CACHE}/test-tls/${crypto.randomUUID()}`, ["alice"]);
  const [cloud, deviceEnd] = memoryLinkPair("ns/node-a");
  const client = new SessionClient(cloud);
  const device = new SessionServer(deviceEnd, { dispatcher: echoDispatcher().dispatcher });
  client.start();
  device.start();
  const first = freePort();
  const kubelet = server({
    firstPort: first,
    portCount: 1,
    clientCa: certs.ca,
    device: client,
    timeouts: { creationMs: 400, idleMs: 1500 },
  }).kubelet(certs.server);
  kubelet.portFor("node-a");
  const ac = new AbortController();
  const running = kubelet.run(ac.signal);
  await kubelet.ready;
  const tls = { ca: certs.ca, ...certs.clients["alice"]! };
  try {
    // The echo device copies stdin to stdout, writes "bye" to stderr at EOF and exits with
    // the first byte of its payload (the ExecCmd's first protobuf tag: 10).
    const ok = await spdyExec(first, "/exec/ns/p/c?command=cat&input=1&output=1&error=1", tls);
    await ok.open(1, "error");
    await ok.open(3, "stdin");
    await ok.open(5, "stdout");
    await ok.open(7, "stderr");
    await ok.send(3, "hello spdy", true);
    await ok.until(() => ok.dataOf(1).length > 0 && ok.dataOf(7) === "bye");
    assert.equal(ok.dataOf(5), "hello spdy");
    const status = JSON.parse(ok.dataOf(1));
    assert.equal(status.reason, "NonZeroExitCode");
    assert.deepEqual(status.details.causes, [{ reason: "ExitCode", message: "10" }]);
    ok.close();

    // Only the error stream of the two expected: a Failure status after the creation timeout.
    const started = Date.now();
    const partial = await spdyExec(first, "/exec/ns/p/c?command=cat&output=1", tls);
    await partial.open(1, "error");
    await partial.until(() => partial.dataOf(1).length > 0);
    assert.ok(Date.now() - started >= 400);
    assert.match(
      JSON.parse(partial.dataOf(1)).message,
      /Timed out waiting for the client's streams \(stdout\)/,
    );
    partial.close();

    // A session without traffic is closed after the idle timeout.
    const idle = await spdyExec(first, "/exec/ns/p/c?command=cat&input=1&output=1", tls);
    await idle.open(1, "error");
    await idle.open(3, "stdin");
    await idle.open(5, "stdout");
    const t0 = Date.now();
    const closed = await idle.until(() => false);
    assert.ok(closed, "the server closed the connection");
    const waited = Date.now() - t0;
    assert.ok(waited >= 1400 && waited < 6000, `closed after ${waited} ms`);
    idle.close();
  } finally {
    ac.abort();
    await running;
    cloud.close();
  }
});
