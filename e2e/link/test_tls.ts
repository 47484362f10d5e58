/** TLS material for transport tests: a CA and a server certificate for localhost/127.0.0.1. */
import { createCa, issueLeaf } from "../cluster/pki.ts";
import { CACHE, ensureDir } from "../paths.ts";

/** PEM strings. */
export interface TestTls {
  ca: string;
  cert: string;
  key: string;
  /** Files, for tools that want paths. */
  caFile: string;
  certFile: string;
  keyFile: string;
}

let cached: Promise<TestTls> | undefined;

/** Creates (once per process) a CA and a server certificate under `.cache/test-tls/<random>`. */
export function testTls(): Promise<TestTls> {
  cached ??= (async () => {
    const dir = await ensureDir(`${CACHE}/test-tls/${crypto.randomUUID()}`);
    const ca = await createCa(dir, "aranya-test-ca");
    const leaf = await issueLeaf(dir, ca, {
      name: "server",
      subject: "/CN=localhost",
      usage: "server",
      sans: ["DNS:localhost", "IP:127.0.0.1"],
    });
    return {
      ca: await Deno.readTextFile(ca.cert),
      cert: await Deno.readTextFile(leaf.cert),
      key: await Deno.readTextFile(leaf.key),
      caFile: ca.cert,
      certFile: leaf.cert,
      keyFile: leaf.key,
    };
  })();
  return cached;
}
