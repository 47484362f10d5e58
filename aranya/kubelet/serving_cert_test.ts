/**
 * The kubelet serving certificate against the real control plane:
 *
 * - with aranya's own ServiceAccount (deploy/aranya/rbac.yaml, not admin) a CSR to
 *   kubernetes.io/kubelet-serving is approved by aranya and signed by kube-controller-manager;
 *   the certificate chains to the cluster CA, names the IP, is for server auth only, and the
 *   CSR is gone afterwards; no key material is logged;
 * - a node:https server with it is accepted by a TLS client trusting only the cluster CA, and by
 *   the API server itself (node proxy through `--kubelet-certificate-authority`);
 * - renewal at the fraction of the life (moved forward with an injected clock) emits onChange
 *   with a new certificate, which `setSecureContext` swaps into the running server;
 * - a CSR nobody signs times out, a denied CSR fails, both with errors naming the CSR;
 * - the Secret and file sources: read, rotated (onChange), and clear errors.
 */
// @peculiar/x509 needs the Reflect polyfill loaded before it.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import https from "node:https";
import tls from "node:tls";
import type { CertificatesApi } from "../kube/apis.ts";
import { createLogger } from "@aranya/common/log";
import { ARANYA_E2E_DIR, aranyaKubeconfig } from "@aranya/e2e/aranya_harness";
import { type ClusterHandle, eventually, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { CACHE, ensureDir, exists } from "@aranya/e2e/paths";
import { run } from "@aranya/e2e/process";
import { loadKubeConfig, makeKubeClients } from "../kube/client.ts";
import { TokenBucket } from "../kube/rate_limiter.ts";
import { createServingCertificate, type KeyCert } from "./serving_cert.ts";
import { CsrServingCertificate } from "./csr_serving_cert.ts";
import { FileServingCertificate } from "./file_serving_cert.ts";
import { SecretServingCertificate } from "./secret_serving_cert.ts";
import { testClients } from "../kube/testing/test_clients.ts";

/** Keep-alive API sockets and client-node internals outlive single tests; stopped in finally. */
const opts = { sanitizeOps: false, sanitizeResources: false };

/** The cluster signing CA: the PKI of e2e/cluster (next to the kubeconfig), else kube-root-ca. */
async function clusterCa(cluster: ClusterHandle): Promise<string> {
  const pki = `${cluster.kubeconfig.replace(/\/[^/]*$/, "")}/run/pki/ca.crt`;
  if (await exists(pki)) return await Deno.readTextFile(pki);
  return JSON.parse(
    await cluster.kubectlOk([
      "get",
      "configmap",
      "kube-root-ca.crt",
      "-n",
      "default",
      "-o",
      "json",
    ]),
  ).data["ca.crt"];
}

/** Log lines into an array (JSON parsed). */
function captureLog() {
  const lines: string[] = [];
  const log = createLogger({ level: "debug", sink: (l) => lines.push(l) });
  const parsed = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  return { lines, log, parsed };
}

/** The CSR names the logs mention. */
const csrNames = (parsed: Record<string, unknown>[]) => [
  ...new Set(parsed.map((l) => l.csr).filter((c): c is string => typeof c === "string")),
];

async function csrExists(cluster: ClusterHandle, name: string): Promise<boolean> {
  return (await cluster.kubectl(["get", "csr", name])).code === 0;
}

/** An https server answering "ok" with `kc`, on 127.0.0.1 and a free port. */
async function serve(kc: KeyCert): Promise<{ server: https.Server; port: number }> {
  const server = https.createServer({ key: kc.key, cert: kc.cert }, (_req, res) => res.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as { port: number }).port };
}

/** The serial number of the certificate a TLS server presents now. */
function peerSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.destroy();
    });
    s.on("error", reject);
  });
}

function closeServer(server: https.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

Deno.test({
  name: "CSR serving certificate with aranya's RBAC: issued, trusted, renewed",
  ...opts,
  fn: async (t) => {
    const cluster = await useCluster();
    const ac = new AbortController();
    let running: Promise<void> | undefined;
    let server: https.Server | undefined;
    const nodeName = uniqueName("scert");
    const kubeconfigDir = `${ARANYA_E2E_DIR}/${nodeName}`;
    try {
      const kubeconfig = await aranyaKubeconfig(cluster, kubeconfigDir);
      const clients = makeKubeClients(loadKubeConfig({ kubeconfig, env: {} }), {
        limiter: new TokenBucket({ qps: 50, burst: 100 }),
      });
      const ca = await clusterCa(cluster);
      const { lines, log, parsed } = captureLog();
      let offsetMs = 0;
      const changes: KeyCert[] = [];
      const certs = new CsrServingCertificate({
        certificates: clients.certificates,
        nodeName,
        ipAddresses: ["127.0.0.1"],
        dnsNames: ["localhost"],
        expirationSeconds: 3600,
        now: () => Date.now() + offsetMs,
        checkIntervalMs: 50,
        retryInitialMs: 200,
        retryMaxMs: 1000,
        log,
      });
      certs.onChange((kc) => {
        changes.push(kc);
        offsetMs = 0; // back to the real clock, so it does not renew again
      });
      assert.throws(() => certs.current(), /not issued yet/);
      running = certs.run(ac.signal);
      await certs.ready;
      const first = certs.current();
      const leaf = new X509Certificate(first.cert);

      await t.step("the certificate chains to the cluster CA and is a kubelet serving one", () => {
        const caCert = new X509Certificate(ca);
        assert.ok(leaf.checkIssued(caCert), "issued by the cluster CA");
        assert.ok(leaf.verify(caCert.publicKey), "signed by the cluster CA's key");
        assert.match(leaf.subject, new RegExp(`CN=system:node:${nodeName}`));
        assert.match(leaf.subject, /O=system:nodes/);
        assert.match(leaf.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
        assert.match(leaf.subjectAltName ?? "", /DNS:localhost/);
        const parsed = new x509.X509Certificate(first.cert);
        const eku = parsed.getExtension(x509.ExtendedKeyUsageExtension);
        assert.deepEqual(
          [...(eku?.usages ?? [])],
          [x509.ExtendedKeyUsage.serverAuth],
          "serverAuth",
        );
        const ku = parsed.getExtension(x509.KeyUsagesExtension);
        assert.ok(ku && ku.usages & x509.KeyUsageFlags.digitalSignature, "digitalSignature");
        const lifeS = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
        assert.ok(lifeS <= 3600 + 600, `expirationSeconds honoured (life ${lifeS} s)`);
        assert.match(first.key, /^-----BEGIN PRIVATE KEY-----/);
      });

      await t.step("its CSR was approved by aranya and deleted once signed", async () => {
        const names = csrNames(parsed());
        assert.equal(names.length, 1, lines.join("\n"));
        assert.match(names[0]!, /^aranya-kubelet-serving-/);
        assert.equal(await csrExists(cluster, names[0]!), false);
      });

      await t.step("no key material in the logs", () => {
        assert.ok(lines.length > 0);
        for (const l of lines) assert.doesNotMatch(l, /PRIVATE KEY|BEGIN CERTIFICATE/);
      });

      await t.step("a TLS client trusting only the cluster CA accepts the server", async () => {
        const s = await serve(first);
        server = s.server;
        const client = Deno.createHttpClient({ caCerts: [ca] });
        try {
          const res = await fetch(`https://127.0.0.1:${s.port}/healthz`, { client });
          assert.equal(await res.text(), "ok");
        } finally {
          client.close();
        }
      });

      await t.step(
        "the API server accepts it as a Node's kubelet endpoint (pod logs)",
        async () => {
          // Node proxy refuses loopback addresses; pod logs (what kubectl logs does) do not.
          const node = uniqueName("scert-node");
          const pod = uniqueName("scert-pod");
          const port = (server!.address() as { port: number }).port;
          try {
            await cluster.kubectlOk(
              ["create", "-f", "-"],
              JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name: node } }),
            );
            await cluster.kubectlOk([
              "patch",
              "node",
              node,
              "--subresource=status",
              "--type=merge",
              "-p",
              JSON.stringify({
                status: {
                  addresses: [{ type: "InternalIP", address: "127.0.0.1" }],
                  daemonEndpoints: { kubeletEndpoint: { Port: port } },
                },
              }),
            ]);
            await cluster.kubectlOk(
              ["create", "-n", "default", "-f", "-"],
              JSON.stringify({
                apiVersion: "v1",
                kind: "Pod",
                metadata: { name: pod },
                spec: { nodeName: node, containers: [{ name: "c", image: "example.invalid/x" }] },
              }),
            );
            const out = await cluster.kubectlOk(["logs", "-n", "default", pod, "-c", "c"]);
            assert.equal(out.trim(), "ok");
          } finally {
            await cluster.kubectl([
              "delete",
              "pod",
              pod,
              "-n",
              "default",
              "--grace-period=0",
              "--force",
            ]);
            await cluster.kubectl(["delete", "node", node, "--wait=false"]);
          }
        },
      );

      await t.step("renewal at the fraction of its life emits onChange", async () => {
        const due = certs.renewAt()!;
        assert.ok(due > Date.now(), "not due yet");
        assert.equal(changes.length, 0);
        offsetMs = due - Date.now() + 1000; // the clock jumps past the renewal time
        const renewed = await eventually(
          "the renewed certificate",
          () => Promise.resolve(changes[0]),
          30_000,
        );
        assert.notEqual(renewed.cert, first.cert);
        assert.notEqual(renewed.key, first.key);
        assert.deepEqual(certs.current(), renewed);
        const next = new X509Certificate(renewed.cert);
        assert.ok(next.checkIssued(new X509Certificate(ca)));
        assert.notEqual(next.serialNumber, leaf.serialNumber);
        // The running server takes it without a restart.
        const port = (server!.address() as { port: number }).port;
        assert.equal(await peerSerial(port), leaf.serialNumber);
        server!.setSecureContext({ key: renewed.key, cert: renewed.cert });
        assert.equal(await peerSerial(port), next.serialNumber);
        const names = csrNames(parsed());
        assert.equal(names.length, 2);
        for (const n of names) assert.equal(await csrExists(cluster, n), false, n);
      });
    } finally {
      ac.abort();
      await running;
      if (server) await closeServer(server);
      await Deno.remove(kubeconfigDir, { recursive: true }).catch(() => {});
      await cluster.release();
    }
  },
});

/** Clients as the admin (who may approve for any signer). */
function adminClients(cluster: ClusterHandle) {
  const kc = testClients(cluster.kubeconfig);
  return {
    certificates: kc.certificates,
    core: kc.core,
  };
}

Deno.test({
  name: "CSR serving certificate: unsigned and denied CSRs fail with errors naming the CSR",
  ...opts,
  fn: async (t) => {
    const cluster = await useCluster();
    const { certificates } = adminClients(cluster);
    try {
      await t.step("a CSR nobody signs times out", async () => {
        const { log, parsed } = captureLog();
        const certs = new CsrServingCertificate({
          certificates,
          nodeName: uniqueName("scert"),
          ipAddresses: ["127.0.0.1"],
          signerName: "example.com/nobody-signs-this",
          signTimeoutMs: 1500,
          log,
        });
        const ac = new AbortController();
        const running = certs.run(ac.signal);
        await assert.rejects(certs.ready, (err: Error) => {
          assert.equal(err.name, "TimeoutError");
          assert.match(
            err.message,
            /^CertificateSigningRequest "aranya-kubelet-serving-[a-z0-9]+" \(signer "example\.com\/nobody-signs-this"\) was not signed within 2 s \(approved; is the signer running/,
          );
          return true;
        });
        await assert.rejects(running, /was not signed/);
        const [name] = csrNames(parsed());
        assert.ok(name && !(await csrExists(cluster, name)), "the CSR was deleted");
      });

      await t.step("a denied CSR fails at once", async () => {
        const { log, parsed } = captureLog();
        const certs = new CsrServingCertificate({
          certificates,
          nodeName: uniqueName("scert"),
          ipAddresses: ["127.0.0.1"],
          selfApprove: false,
          signTimeoutMs: 60_000,
          log,
        });
        const ac = new AbortController();
        const running = certs.run(ac.signal);
        const name = await eventually("the CSR", () => Promise.resolve(csrNames(parsed())[0]));
        await cluster.kubectlOk(["certificate", "deny", name]);
        await assert.rejects(certs.ready, (err: Error) => {
          assert.equal(err.name, "ForbiddenError");
          assert.equal(
            err.message,
            `CertificateSigningRequest "${name}" (signer "kubernetes.io/kubelet-serving") was ` +
              `denied (reason "KubectlDeny", message "This CSR was denied by kubectl certificate deny.")`,
          );
          return true;
        });
        await assert.rejects(running);
      });

      await t.step("stopping before the certificate rejects ready as canceled", async () => {
        const certs = new CsrServingCertificate({
          certificates,
          nodeName: uniqueName("scert"),
          ipAddresses: ["127.0.0.1"],
          signerName: "example.com/nobody-signs-this",
        });
        const ac = new AbortController();
        const running = certs.run(ac.signal);
        setTimeout(() => ac.abort(), 300);
        await assert.rejects(certs.ready, { name: "CanceledError" });
        await running;
      });
    } finally {
      await cluster.release();
    }
  },
});

Deno.test("CSR serving certificate: bad options are refused at construction", () => {
  const certificates = {} as CertificatesApi;
  assert.throws(
    () =>
      new CsrServingCertificate({
        certificates,
        nodeName: "Aranya_1",
        ipAddresses: ["10.0.0.300"],
        dnsNames: ["bad name"],
        renewFraction: 1,
        expirationSeconds: 60,
      }),
    {
      name: "InvalidInputError",
      message: 'Kubelet serving certificate CSR: node name "Aranya_1" is not a DNS subdomain; ' +
        'IP address "10.0.0.300" is not an IP; DNS name "bad name" is not a DNS name; ' +
        "renew fraction 1 is not between 0 and 1; expirationSeconds 60 is not an integer >= 600",
    },
  );
  assert.throws(
    () => new CsrServingCertificate({ certificates, nodeName: "aranya", ipAddresses: [] }),
    /at least one IP address or DNS name is needed/,
  );
});

/** A self-signed EC key pair with an IP SAN, made with openssl in `dir`. */
async function selfSigned(dir: string, cn: string): Promise<KeyCert> {
  const key = `${dir}/${cn}.key`;
  const cert = `${dir}/${cn}.crt`;
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "1",
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "subjectAltName=IP:127.0.0.1",
  ]);
  return { key: await Deno.readTextFile(key), cert: await Deno.readTextFile(cert) };
}

const b64 = (s: string) => Buffer.from(s).toString("base64");

Deno.test({
  name: "Secret serving certificate: read, rotated, clear errors",
  ...opts,
  fn: async (t) => {
    const cluster = await useCluster();
    const ns = uniqueName("scert");
    const dir = await Deno.makeTempDir({ dir: await ensureDir(`${CACHE}/serving-cert-test`) });
    const { core } = adminClients(cluster);
    const ac = new AbortController();
    let running: Promise<void> | undefined;
    const apply = (name: string, kc: KeyCert) =>
      cluster.kubectlOk(
        ["apply", "-n", ns, "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name },
          type: "kubernetes.io/tls",
          data: { "tls.crt": b64(kc.cert), "tls.key": b64(kc.key) },
        }),
      );
    try {
      await cluster.kubectlOk(["create", "namespace", ns]);
      const one = await selfSigned(dir, "one");
      const two = await selfSigned(dir, "two");

      await t.step("read, then re-read: onChange on rotation", async () => {
        await apply("kubelet-tls", one);
        const certs = createServingCertificate(
          { kind: "secret", namespace: ns, name: "kubelet-tls", refreshMs: 100 },
          {
            clients: { core, certificates: {} as never },
            kubeletAddress: "127.0.0.1",
            nodeName: "x",
          },
        );
        const changes: KeyCert[] = [];
        certs.onChange((kc) => changes.push(kc));
        running = certs.run(ac.signal);
        await certs.ready;
        assert.deepEqual(certs.current(), one);
        await apply("kubelet-tls", two);
        const changed = await eventually("the rotated pair", () => Promise.resolve(changes[0]));
        assert.deepEqual(changed, two);
        assert.deepEqual(certs.current(), two);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(changes.length, 1, "unchanged re-reads do not emit");
      });

      await t.step("a missing Secret is named", async () => {
        const certs = new SecretServingCertificate({ core, namespace: ns, name: "missing" });
        const r = certs.run(ac.signal);
        await assert.rejects(certs.ready, {
          name: "NotFoundError",
          message: `Secret "${ns}/missing" (the kubelet serving certificate) not found`,
        });
        await assert.rejects(r);
      });

      await t.step("a key of another certificate is refused", async () => {
        await apply("mixed", { cert: one.cert, key: two.key });
        const certs = new SecretServingCertificate({ core, namespace: ns, name: "mixed" });
        const r = certs.run(ac.signal);
        await assert.rejects(certs.ready, {
          name: "InvalidInputError",
          message: `Secret "${ns}/mixed": the private key does not belong to the certificate`,
        });
        await assert.rejects(r);
      });

      await t.step("a Secret without tls.key is refused", async () => {
        await cluster.kubectlOk([
          "create",
          "secret",
          "generic",
          "no-key",
          "-n",
          ns,
          `--from-literal=tls.crt=${one.cert}`,
        ]);
        const certs = new SecretServingCertificate({ core, namespace: ns, name: "no-key" });
        const r = certs.run(ac.signal);
        await assert.rejects(certs.ready, {
          message: `Secret "${ns}/no-key" has no "tls.key" (or it is empty)`,
        });
        await assert.rejects(r);
      });
    } finally {
      ac.abort();
      await running;
      await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
      await Deno.remove(dir, { recursive: true });
      await cluster.release();
    }
  },
});

Deno.test({
  name: "File serving certificate: read, rotated, clear errors",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir({ dir: await ensureDir(`${CACHE}/serving-cert-test`) });
    const ac = new AbortController();
    let running: Promise<void> | undefined;
    try {
      const one = await selfSigned(dir, "one");
      const two = await selfSigned(dir, "two");
      const certFile = `${dir}/tls.crt`;
      const keyFile = `${dir}/tls.key`;
      await Deno.writeTextFile(certFile, one.cert);
      await Deno.writeTextFile(keyFile, one.key);
      const certs = new FileServingCertificate({ certFile, keyFile, refreshMs: 50 });
      const changes: KeyCert[] = [];
      certs.onChange((kc) => changes.push(kc));
      running = certs.run(ac.signal);
      await certs.ready;
      assert.deepEqual(certs.current(), one);
      // Half-rotated (new key, old certificate) is refused and the old pair keeps serving.
      await Deno.writeTextFile(keyFile, two.key);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(certs.current(), one);
      await Deno.writeTextFile(certFile, two.cert);
      assert.deepEqual(
        await eventually("the rotated pair", () => Promise.resolve(changes[0])),
        two,
      );

      const missing = new FileServingCertificate({ certFile: `${dir}/nope.crt`, keyFile });
      const r = missing.run(ac.signal);
      await assert.rejects(missing.ready, {
        name: "NotFoundError",
        message: `Kubelet serving certificate file "${dir}/nope.crt" does not exist`,
      });
      await assert.rejects(r);
    } finally {
      ac.abort();
      await running;
      await Deno.remove(dir, { recursive: true });
    }
  },
});
