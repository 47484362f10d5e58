/**
 * The serving certificate of aranya's kubelet API server.
 *
 * aranya serves the kubelet API of every virtual node at one advertised
 * address (config `kubelet.address`). The API server reaches it with
 * `--kubelet-certificate-authority` set to the cluster CA, so the certificate
 * must chain to that CA and name that address. A {@link ServingCertificate}
 * hands the HTTPS server its current key and certificate and tells it when
 * they change. Three sources:
 *
 * - {@link CsrServingCertificate}: a fresh ECDSA P-256 key and a
 *   `certificates.k8s.io/v1` CertificateSigningRequest for the signer
 *   `kubernetes.io/kubelet-serving` (subject `CN=system:node:<name>`,
 *   `O=system:nodes`, the address as IP SAN), approved by aranya itself and
 *   signed by kube-controller-manager's cluster signer, exactly as a kubelet
 *   with `serverTLSBootstrap` gets its certificate; renewed at a fraction of
 *   its life (default 0.8). The default on a cluster.
 * - {@link SecretServingCertificate}: a `kubernetes.io/tls` Secret (e.g. from
 *   cert-manager), re-read periodically.
 * - {@link FileServingCertificate}: a certificate and key file pair, re-read
 *   periodically.
 *
 * {@link createServingCertificate} builds one from a {@link ServingCertSource}
 * (the documented option type for aranya's config). Each source is a file of
 * its own (csr_serving_cert.ts, secret_serving_cert.ts, file_serving_cert.ts,
 * the latter two on reloading_serving_cert.ts); key_cert.ts holds what they
 * share (checking a pair, the first certificate, telling listeners).
 *
 * Private keys are never logged.
 *
 * @module
 */
import { type Logger } from "@aranya/common/log";
import { type KubeClients } from "../kube/client.ts";

import { CsrServingCertificate } from "./csr_serving_cert.ts";
import { FileServingCertificate } from "./file_serving_cert.ts";
import { SecretServingCertificate } from "./secret_serving_cert.ts";

/** A private key and its certificate (chain), both PEM; what a TLS server is configured with. */
export interface KeyCert {
  /** PEM private key (PKCS#8 for issued keys; whatever the Secret/file holds otherwise). */
  key: string;
  /** PEM certificate, leaf first, optionally followed by intermediates. */
  cert: string;
}

/**
 * The kubelet API server's certificate source.
 *
 * Contract:
 * - `run(signal)` is called once; it obtains the first certificate, then keeps it fresh until
 *   `signal` aborts, and resolves then. It rejects only when the first certificate cannot be had
 *   (with the same error as `ready`).
 * - `ready` resolves once `current()` has a certificate; it rejects with a clear error (naming
 *   the CSR, Secret or file) when the first one cannot be had, or with CanceledError when
 *   `signal` aborts before. It never settles while `run` has not been called.
 * - `current()` returns the certificate to serve now; it throws InternalError before `ready`.
 * - `onChange(fn)`: `fn` is called with the new pair each time it is replaced after `ready`
 *   (renewal, rotated Secret or files), never for the first one. A throwing listener is logged
 *   and does not stop the others. Failures after `ready` never drop the current certificate:
 *   they are logged and retried while it keeps serving.
 */
export interface ServingCertificate {
  readonly ready: Promise<void>;
  run(signal: AbortSignal): Promise<void>;
  current(): KeyCert;
  onChange(fn: (kc: KeyCert) => void): void;
}

/** The signer of kubelet serving certificates, signed by kube-controller-manager. */
export const KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving";
/** Name prefix (`generateName`) of the CSRs aranya creates. */
export const CSR_NAME_PREFIX = "aranya-kubelet-serving-";
/** Label on the CSRs aranya creates. */
export const CSR_LABELS: Readonly<Record<string, string>> = Object.freeze({
  "app.kubernetes.io/managed-by": "aranya",
  "app.kubernetes.io/component": "kubelet-serving",
});

/** The defaults of the options below. */
export const SERVING_CERT_DEFAULTS = Object.freeze({
  renewFraction: 0.8,
  signTimeoutMs: 120_000,
  checkIntervalMs: 60_000,
  refreshMs: 60_000,
  retryInitialMs: 5_000,
  retryMaxMs: 300_000,
});

/**
 * Where the kubelet serving certificate comes from: the option type for aranya's config
 * (`kubelet.tls`), turned into a {@link ServingCertificate} by {@link createServingCertificate}.
 * Durations are milliseconds.
 */
export type ServingCertSource =
  | {
    /** A CSR to the cluster's `kubernetes.io/kubelet-serving` signer; see CsrServingCertificate. */
    kind: "csr";
    /** Name in the subject `CN=system:node:<nodeName>` (default: the factory's `nodeName`). */
    nodeName?: string;
    /** IP SANs besides the advertised `kubelet.address` (which is always included). */
    extraIpAddresses?: string[];
    /** DNS SANs (default none). */
    dnsNames?: string[];
    /** Requested lifetime, seconds (>= 600, the API minimum); default: the signer's (1 year). */
    expirationSeconds?: number;
    /** Renew at this fraction of the certificate's life, 0 < f < 1 (default 0.8). */
    renewFraction?: number;
    /** How long to wait for the signer after approval (default 2 min). */
    signTimeoutMs?: number;
  }
  | {
    /** A Secret with `tls.crt` and `tls.key` (type kubernetes.io/tls); see SecretServingCertificate. */
    kind: "secret";
    namespace: string;
    name: string;
    /** Re-read interval (default 1 min). */
    refreshMs?: number;
  }
  | {
    /** PEM files; see FileServingCertificate. */
    kind: "files";
    certFile: string;
    keyFile: string;
    /** Re-read interval (default 1 min). */
    refreshMs?: number;
  };

/** What {@link createServingCertificate} needs besides the source. */
export interface ServingCertDeps {
  /** aranya's API clients (rate limited): `core` for Secrets, `certificates` for CSRs. */
  clients: Pick<KubeClients, "core" | "certificates">;
  /** The advertised kubelet address (config `kubelet.address`), an IP: always an IP SAN. */
  kubeletAddress: string;
  /** Default subject node name for CSRs (e.g. "aranya" or the pod's name). */
  nodeName: string;
  log?: Logger;
}

/** Builds the {@link ServingCertificate} of `source`; does no I/O. */
export function createServingCertificate(
  source: ServingCertSource,
  deps: ServingCertDeps,
): ServingCertificate {
  switch (source.kind) {
    case "csr":
      return new CsrServingCertificate({
        certificates: deps.clients.certificates,
        nodeName: source.nodeName ?? deps.nodeName,
        ipAddresses: [...new Set([deps.kubeletAddress, ...(source.extraIpAddresses ?? [])])],
        dnsNames: source.dnsNames ?? [],
        expirationSeconds: source.expirationSeconds,
        renewFraction: source.renewFraction,
        signTimeoutMs: source.signTimeoutMs,
        log: deps.log,
      });
    case "secret":
      return new SecretServingCertificate({
        core: deps.clients.core,
        namespace: source.namespace,
        name: source.name,
        refreshMs: source.refreshMs,
        log: deps.log,
      });
    case "files":
      return new FileServingCertificate({
        certFile: source.certFile,
        keyFile: source.keyFile,
        refreshMs: source.refreshMs,
        log: deps.log,
      });
  }
}
