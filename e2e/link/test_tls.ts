/** TLS material shared by a test process: a CA and a server certificate for localhost/127.0.0.1. */
import { CACHE } from "../paths.ts";
import { makeTestCerts } from "./test_certs.ts";

/** PEM strings. */
export interface TestTls {
  ca: string;
  cert: string;
  key: string;
  /** The CA as a file, for tools that want paths. */
  caFile: string;
}

let cached: Promise<TestTls> | undefined;

/** Creates (once per process) a CA and a server certificate under `.cache/test-tls/<random>`. */
export function testTls(): Promise<TestTls> {
  cached ??= makeTestCerts(`${CACHE}/test-tls/${crypto.randomUUID()}`).then((c) => ({
    ca: c.ca,
    cert: c.server.cert,
    key: c.server.key,
    caFile: c.caPath,
  }));
  return cached;
}
