/**
 * What every serving certificate source does with a key/certificate pair:
 * parses and checks it (the key belongs to the certificate), gets the first
 * one for `run`, and tells the listeners of a new one.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { CanceledError, errorMessage, InvalidInputError } from "@aranya/common/errors";
import { readySignal } from "@aranya/common/lifecycle";
import { type Logger } from "@aranya/common/log";

import type { KeyCert } from "./serving_cert.ts";

/**
 * The first certificate of a source, shared by every `run`: on failure `ready`
 * is rejected (with CanceledError when `signal` aborted first, and then
 * undefined is returned) and the error rethrown. The caller keeps the result,
 * then resolves `ready` (so `current()` works for whoever awaits it).
 */
export async function firstCertificate<T>(
  ready: ReturnType<typeof readySignal>,
  signal: AbortSignal,
  load: () => Promise<T>,
): Promise<T | undefined> {
  try {
    return await load();
  } catch (err) {
    if (signal.aborted) {
      ready.reject(new CanceledError("Stopped before the kubelet serving certificate"));
      return undefined;
    }
    ready.reject(err);
    throw err;
  }
}

/** Calls every listener with `kc`; a throwing listener is logged. */
export function emit(listeners: ((kc: KeyCert) => void)[], kc: KeyCert, log: Logger): void {
  for (const fn of listeners) {
    try {
      fn(kc);
    } catch (err) {
      log.error("A kubelet serving certificate listener failed", { error: errorMessage(err) });
    }
  }
}

/**
 * The first certificate of a PEM bundle, parsed by the platform (node:crypto; @peculiar/x509 is
 * used only to write the CSR); InvalidInputError naming `what` when there is none.
 */
export function parseLeaf(pem: string, what: string): X509Certificate {
  const m = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/);
  if (!m) throw new InvalidInputError(`${what} holds no PEM certificate`);
  try {
    return new X509Certificate(m[0]);
  } catch (err) {
    throw new InvalidInputError(`${what} holds a malformed certificate: ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/**
 * Checks a key/certificate pair read from outside: the certificate parses and the key is a PEM
 * private key (PKCS#8, SEC1 or PKCS#1) of the certificate's public key.
 *
 * @returns the leaf's notAfter, ms since the epoch.
 * @throws InvalidInputError naming `what`.
 */
export function checkKeyCert(kc: KeyCert, what: string): number {
  const leaf = parseLeaf(kc.cert, what);
  let matches: boolean;
  try {
    const fromKey = createPublicKey(createPrivateKey(kc.key)).export({
      type: "spki",
      format: "der",
    });
    const fromCert = leaf.publicKey.export({ type: "spki", format: "der" });
    matches = Buffer.compare(fromKey, fromCert) === 0;
  } catch (err) {
    throw new InvalidInputError(`${what} holds a malformed private key: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  if (!matches) {
    throw new InvalidInputError(`${what}: the private key does not belong to the certificate`);
  }
  return Date.parse(leaf.validTo);
}
