/**
 * Throwaway TLS material for transport tests, made with the openssl CLI: one
 * CA, a serving certificate for "localhost" and 127.0.0.1, and client
 * certificates with chosen subject CNs. Everything is PEM text; the files stay
 * in `dir` (under .cache/, ignored by git).
 */
import { ensureDir } from "../paths.ts";
import { run } from "../process.ts";

/** A certificate and its private key, PEM. */
export interface PemPair {
  cert: string;
  key: string;
}

/** What {@link makeTestCerts} returns. */
export interface TestCerts {
  /** PEM CA certificate that signed everything below. */
  ca: string;
  /** Path of the CA certificate file (for programs that read files). */
  caPath: string;
  /** Serving certificate: DNS:localhost, IP:127.0.0.1. */
  server: PemPair;
  /** Client certificates by subject CN. */
  clients: Record<string, PemPair>;
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Issues a fresh CA, server certificate and one client certificate per CN into `dir`. */
export async function makeTestCerts(dir: string, clientCNs: string[] = []): Promise<TestCerts> {
  await ensureDir(dir);
  const caKey = `${dir}/ca.key`;
  const caCert = `${dir}/ca.crt`;
  await run("openssl", [
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    caKey,
    "-out",
    caCert,
    "-days",
    "2",
    "-subj",
    "/CN=aranya-test-ca",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
  ]);
  const issue = async (name: string, cn: string, usage: "serverAuth" | "clientAuth") => {
    const key = `${dir}/${name}.key`;
    const csr = `${dir}/${name}.csr`;
    const crt = `${dir}/${name}.crt`;
    const ext = `${dir}/${name}.ext`;
    await run("openssl", [
      "req",
      "-new",
      ...EC_KEY,
      "-keyout",
      key,
      "-out",
      csr,
      "-subj",
      `/CN=${cn.replaceAll("/", "\\/")}`,
    ]);
    const lines = [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      `extendedKeyUsage=${usage}`,
    ];
    if (usage === "serverAuth") lines.push("subjectAltName=DNS:localhost,IP:127.0.0.1");
    await Deno.writeTextFile(ext, lines.join("\n") + "\n");
    const serial = Array.from(
      crypto.getRandomValues(new Uint8Array(16)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      caCert,
      "-CAkey",
      caKey,
      "-set_serial",
      `0x${serial}`,
      "-out",
      crt,
      "-days",
      "2",
      "-extfile",
      ext,
    ]);
    return { cert: await Deno.readTextFile(crt), key: await Deno.readTextFile(key) };
  };
  const server = await issue("server", "localhost", "serverAuth");
  const clients: Record<string, PemPair> = {};
  for (const [i, cn] of clientCNs.entries()) {
    clients[cn] = await issue(`client-${i}`, cn, "clientAuth");
  }
  return { ca: await Deno.readTextFile(caCert), caPath: caCert, server, clients };
}
