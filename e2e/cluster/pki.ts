/**
 * Fresh PKI for the local control plane, made with the openssl CLI.
 *
 * One cluster CA signs everything: the API server's serving certificate, the
 * client certificates of the admin, controller-manager, scheduler and of the API
 * server towards kubelets, and (through the controller-manager's signer) the
 * CSRs that aranya files later for its kubelet serving certificate.
 */
import { ensureDir } from "../paths.ts";
import { run } from "../process.ts";

/** One certificate and its key, as file paths. */
export interface CertPair {
  cert: string;
  key: string;
}

/** Paths of everything the control plane needs. */
export interface ClusterPki {
  dir: string;
  ca: CertPair;
  apiserver: CertPair;
  /** The API server's client certificate towards kubelets (and so towards aranya). */
  apiserverKubeletClient: CertPair;
  admin: CertPair;
  controllerManager: CertPair;
  scheduler: CertPair;
  /** Serving certificate for the controller-manager and scheduler health ports. */
  componentServing: CertPair;
  /** Service-account token signing key pair. */
  serviceAccount: { key: string; pub: string };
}

/** What to issue: a file name stem, the subject, the usage and SANs. */
export interface LeafSpec {
  name: string;
  subject: string;
  usage: "server" | "client";
  sans?: string[];
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Creates a self-signed CA in `dir` as `ca.crt`/`ca.key`. */
export async function createCa(dir: string, cn: string): Promise<CertPair> {
  await ensureDir(dir);
  const ca: CertPair = { cert: `${dir}/ca.crt`, key: `${dir}/ca.key` };
  await run("openssl", [
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    ca.key,
    "-out",
    ca.cert,
    "-days",
    "3650",
    "-subj",
    `/CN=${cn}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
  ]);
  return ca;
}

/** Options of {@link generatePki}. */
export interface PkiOptions {
  /** More subject alternative names of the API server's certificate (e.g. "IP:192.0.2.2"). */
  apiserverSans?: string[];
}

/** Generates a complete PKI in `dir` (overwriting what is there). */
export async function generatePki(dir: string, opts: PkiOptions = {}): Promise<ClusterPki> {
  await ensureDir(dir);
  const ca = await createCa(dir, "aranya-e2e-cluster-ca");
  const leaf = (spec: LeafSpec) => issueLeaf(dir, ca, spec);
  const [apiserver, apiserverKubeletClient, admin, controllerManager, scheduler, componentServing] =
    await Promise.all([
      leaf({
        name: "apiserver",
        subject: "/CN=kube-apiserver",
        usage: "server",
        sans: [
          "IP:127.0.0.1",
          "IP:10.0.0.1",
          "DNS:localhost",
          "DNS:kubernetes",
          "DNS:kubernetes.default",
          "DNS:kubernetes.default.svc",
          "DNS:kubernetes.default.svc.cluster.local",
          ...(opts.apiserverSans ?? []),
        ],
      }),
      leaf({
        name: "apiserver-kubelet-client",
        subject: "/O=system:masters/CN=kube-apiserver-kubelet-client",
        usage: "client",
      }),
      leaf({ name: "admin", subject: "/O=system:masters/CN=aranya-e2e-admin", usage: "client" }),
      leaf({
        name: "controller-manager",
        subject: "/CN=system:kube-controller-manager",
        usage: "client",
      }),
      leaf({ name: "scheduler", subject: "/CN=system:kube-scheduler", usage: "client" }),
      leaf({
        name: "component-serving",
        subject: "/CN=aranya-e2e-components",
        usage: "server",
        sans: ["IP:127.0.0.1", "DNS:localhost"],
      }),
    ]);
  const serviceAccount = { key: `${dir}/sa.key`, pub: `${dir}/sa.pub` };
  await run("openssl", ["genpkey", "-algorithm", "RSA", "-out", serviceAccount.key]);
  await run("openssl", ["pkey", "-in", serviceAccount.key, "-pubout", "-out", serviceAccount.pub]);
  return {
    dir,
    ca,
    apiserver,
    apiserverKubeletClient,
    admin,
    controllerManager,
    scheduler,
    componentServing,
    serviceAccount,
  };
}

/** Issues a certificate signed by `ca` into `dir` as `<name>.crt`/`<name>.key`. */
export async function issueLeaf(dir: string, ca: CertPair, spec: LeafSpec): Promise<CertPair> {
  const pair = { cert: `${dir}/${spec.name}.crt`, key: `${dir}/${spec.name}.key` };
  const csr = `${dir}/${spec.name}.csr`;
  const ext = `${dir}/${spec.name}.ext`;
  await run("openssl", [
    "req",
    "-new",
    ...EC_KEY,
    "-keyout",
    pair.key,
    "-out",
    csr,
    "-subj",
    spec.subject,
  ]);
  const lines = [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    `extendedKeyUsage=${spec.usage === "server" ? "serverAuth" : "clientAuth"}`,
  ];
  if (spec.sans?.length) lines.push(`subjectAltName=${spec.sans.join(",")}`);
  await Deno.writeTextFile(ext, lines.join("\n") + "\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    // A random serial per leaf: -CAcreateserial shares one file and races when leaves are issued in parallel.
    "-set_serial",
    `0x${
      Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
        .join("")
    }`,
    "-out",
    pair.cert,
    "-days",
    "365",
    "-extfile",
    ext,
  ]);
  return pair;
}

/** Options for {@link writeKubeconfig}. */
export interface KubeconfigOptions {
  path: string;
  server: string;
  ca: string;
  client: CertPair;
  user: string;
}

/** Writes a kubeconfig with the CA and client certificate embedded. */
export async function writeKubeconfig(o: KubeconfigOptions): Promise<void> {
  const b64 = async (file: string) => btoaBytes(await Deno.readFile(file));
  const text = `apiVersion: v1
kind: Config
clusters:
- name: aranya-e2e
  cluster:
    server: ${o.server}
    certificate-authority-data: ${await b64(o.ca)}
users:
- name: ${o.user}
  user:
    client-certificate-data: ${await b64(o.client.cert)}
    client-key-data: ${await b64(o.client.key)}
contexts:
- name: ${o.user}@aranya-e2e
  context:
    cluster: aranya-e2e
    user: ${o.user}
current-context: ${o.user}@aranya-e2e
`;
  await Deno.writeTextFile(o.path, text, { mode: 0o600 });
}

function btoaBytes(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
