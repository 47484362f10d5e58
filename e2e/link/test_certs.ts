/**
 * Throwaway TLS material for transport tests, made with the openssl CLI: one
 * CA, a serving certificate for "localhost" and 127.0.0.1, and client
 * certificates with chosen subject CNs. Everything is PEM text; the files stay
 * in `dir` (under .cache/, ignored by git).
 */
import { createCa, issueLeaf } from "../cluster/pki.ts";

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

/** Issues a fresh CA, server certificate and one client certificate per CN into `dir`. */
export async function makeTestCerts(dir: string, clientCNs: string[] = []): Promise<TestCerts> {
  const ca = await createCa(dir, "aranya-test-ca");
  const read = async (p: { cert: string; key: string }): Promise<PemPair> => ({
    cert: await Deno.readTextFile(p.cert),
    key: await Deno.readTextFile(p.key),
  });
  const server = await read(
    await issueLeaf(dir, ca, {
      name: "server",
      subject: "/CN=localhost",
      usage: "server",
      sans: ["DNS:localhost", "IP:127.0.0.1"],
    }),
  );
  const clients: Record<string, PemPair> = {};
  for (const [i, cn] of clientCNs.entries()) {
    clients[cn] = await read(
      await issueLeaf(dir, ca, {
        name: `client-${i}`,
        subject: `/CN=${cn.replaceAll("/", "\\/")}`,
        usage: "client",
      }),
    );
  }
  return { ca: await Deno.readTextFile(ca.cert), caPath: ca.cert, server, clients };
}
