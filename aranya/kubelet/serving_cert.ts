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
 * (the documented option type for aranya's config).
 *
 * Private keys are never logged.
 *
 * @module
 */
// @peculiar/x509 needs a Reflect metadata polyfill (tsyringe) loaded BEFORE it: keep this order.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import type { V1CertificateSigningRequest } from "@kubernetes/client-node";
import type { CertificatesApi } from "../kube/apis.ts";
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { Backoff, sleep } from "@aranya/common/backoff";
import {
  CanceledError,
  errorMessage,
  ForbiddenError,
  InternalError,
  InvalidInputError,
  NotFoundError,
  TimeoutError,
} from "@aranya/common/errors";
import { readySignal } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";
import { type KubeClients, withSignal } from "../kube/client.ts";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";
import { decodeBase64Text } from "@aranya/common/base64";

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

/** The certificates.k8s.io calls {@link CsrServingCertificate} makes (a CertificatesApi fits). */
export type CsrApi = Pick<
  CertificatesApi,
  | "createCertificateSigningRequest"
  | "readCertificateSigningRequest"
  | "replaceCertificateSigningRequestApproval"
  | "deleteCertificateSigningRequest"
>;

/** Options of {@link CsrServingCertificate}. */
export interface CsrServingCertificateOptions {
  /** `clients.certificates` of aranya's kube clients. */
  certificates: CsrApi;
  /** Subject: `CN=system:node:<nodeName>`, `O=system:nodes` (the signer requires exactly that). */
  nodeName: string;
  /** IP SANs (at least one IP or DNS SAN). */
  ipAddresses: string[];
  /** DNS SANs. */
  dnsNames?: string[];
  /** Requested lifetime in seconds (>= 600); default: the signer's. */
  expirationSeconds?: number;
  /** Renew at notBefore + fraction * (notAfter - notBefore); 0 < f < 1, default 0.8. */
  renewFraction?: number;
  /** Longest wait for the signed certificate after creating the CSR (default 2 min). */
  signTimeoutMs?: number;
  /** The signer (default kubernetes.io/kubelet-serving; tests use others). */
  signerName?: string;
  /** Approve the CSR itself (default true); false waits for an outside approver. */
  selfApprove?: boolean;
  /** Wall clock, ms since the epoch (default Date.now; tests move it forward). */
  now?: () => number;
  /** The clock is re-read at least this often while waiting to renew (default 1 min). */
  checkIntervalMs?: number;
  /** Back-off between failed renewals: first and largest delay (default 5 s, 5 min). */
  retryInitialMs?: number;
  retryMaxMs?: number;
  log?: Logger;
}

const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const DNS_NAME = /^(\*\.)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/i;

/** One issued certificate with what renewal needs. */
interface Issued extends KeyCert {
  notBefore: number;
  notAfter: number;
  csrName: string;
}

/**
 * A kubelet serving certificate from the cluster's CSR API; see the module doc.
 *
 * Each issuance: generate an ECDSA P-256 key (never leaves the process), build a PKCS#10
 * request with the SANs, create a CSR `aranya-kubelet-serving-<random>` (signer
 * kubernetes.io/kubelet-serving, usages digital signature + server auth), approve it through
 * the `approval` subresource (condition Approved, reason `AranyaApproved`), poll it with
 * back-off until the signer puts `status.certificate` (or Denied/Failed, or `signTimeoutMs`
 * passes: errors naming the CSR), check that the certificate holds our public key, then delete
 * the CSR (kube-controller-manager's CSR cleaner removes any left behind by a crash: issued
 * ones after 1 h, pending ones after 24 h).
 *
 * Renewal runs at `renewFraction` of the certificate's life; a failed renewal is retried with
 * back-off while the current certificate keeps serving (an error is logged once it expired).
 *
 * Needs RBAC (deploy/aranya/rbac.yaml): certificatesigningrequests create/get/delete,
 * certificatesigningrequests/approval update, and `approve` on the signer.
 */
export class CsrServingCertificate implements ServingCertificate {
  readonly #o: CsrServingCertificateOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly #listeners: ((kc: KeyCert) => void)[] = [];
  readonly #now: () => number;
  readonly #signer: string;
  #current: Issued | undefined;
  #started = false;

  /** @throws InvalidInputError for a bad node name, SAN, fraction or lifetime. */
  constructor(opts: CsrServingCertificateOptions) {
    const problems: string[] = [];
    if (!NODE_NAME.test(opts.nodeName)) {
      problems.push(`node name "${opts.nodeName}" is not a DNS subdomain`);
    }
    for (const ip of opts.ipAddresses) {
      if (isIP(ip) === 0) problems.push(`IP address "${ip}" is not an IP`);
    }
    for (const dns of opts.dnsNames ?? []) {
      if (!DNS_NAME.test(dns)) problems.push(`DNS name "${dns}" is not a DNS name`);
    }
    if (opts.ipAddresses.length + (opts.dnsNames?.length ?? 0) === 0) {
      problems.push("at least one IP address or DNS name is needed");
    }
    const f = opts.renewFraction ?? SERVING_CERT_DEFAULTS.renewFraction;
    if (!(f > 0 && f < 1)) problems.push(`renew fraction ${f} is not between 0 and 1`);
    const exp = opts.expirationSeconds;
    if (exp !== undefined && !(Number.isInteger(exp) && exp >= 600)) {
      problems.push(`expirationSeconds ${exp} is not an integer >= 600`);
    }
    if (problems.length > 0) {
      throw new InvalidInputError(`Kubelet serving certificate CSR: ${problems.join("; ")}`);
    }
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#signer = opts.signerName ?? KUBELET_SERVING_SIGNER;
    this.#log = (opts.log ?? nullLogger).with({ component: "kubelet-serving-cert" });
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  current(): KeyCert {
    if (!this.#current) {
      throw new InternalError("The kubelet serving certificate is not issued yet");
    }
    return { key: this.#current.key, cert: this.#current.cert };
  }

  onChange(fn: (kc: KeyCert) => void): void {
    this.#listeners.push(fn);
  }

  /** When the current certificate is due for renewal, ms since the epoch. */
  renewAt(): number | undefined {
    const c = this.#current;
    if (!c) return undefined;
    const f = this.#o.renewFraction ?? SERVING_CERT_DEFAULTS.renewFraction;
    return c.notBefore + f * (c.notAfter - c.notBefore);
  }

  async run(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new InternalError("CsrServingCertificate.run was called twice");
    this.#started = true;
    const first = await firstCertificate(this.#ready, signal, () => this.#issue(signal));
    if (!first) return;
    this.#current = first;
    this.#ready.resolve();
    const backoff = new Backoff({
      initialMs: this.#o.retryInitialMs ?? SERVING_CERT_DEFAULTS.retryInitialMs,
      maxMs: this.#o.retryMaxMs ?? SERVING_CERT_DEFAULTS.retryMaxMs,
    });
    while (!signal.aborted) {
      if (!await this.#sleepUntil(this.renewAt()!, signal)) break;
      try {
        const next = await this.#issue(signal);
        this.#current = next;
        backoff.reset();
        this.#log.info("Kubelet serving certificate renewed", { csr: next.csrName });
        emit(this.#listeners, { key: next.key, cert: next.cert }, this.#log);
      } catch (err) {
        if (signal.aborted) break;
        const delay = backoff.next();
        const expired = this.#now() >= this.#current.notAfter;
        (expired ? this.#log.error : this.#log.warn)(
          `Renewing the kubelet serving certificate failed; ${
            expired ? "the current one has EXPIRED" : "the current one keeps serving"
          }, retrying`,
          { error: errorMessage(err), retryInMs: delay },
        );
        try {
          await sleep(delay, signal);
        } catch {
          break;
        }
      }
    }
  }

  /** Sleeps until the clock reaches `at`, re-reading it every checkIntervalMs; false on abort. */
  async #sleepUntil(at: number, signal: AbortSignal): Promise<boolean> {
    const step = this.#o.checkIntervalMs ?? SERVING_CERT_DEFAULTS.checkIntervalMs;
    for (let left = at - this.#now(); left > 0; left = at - this.#now()) {
      try {
        await sleep(Math.min(left, step), signal);
      } catch {
        return false;
      }
    }
    return !signal.aborted;
  }

  /** One issuance: key, CSR, approval, wait, check, delete. */
  async #issue(signal: AbortSignal): Promise<Issued> {
    const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
    const request = await x509.Pkcs10CertificateRequestGenerator.create({
      name: [{ CN: [`system:node:${this.#o.nodeName}`] }, { O: ["system:nodes"] }],
      keys,
      signingAlgorithm: alg,
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          ...(this.#o.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
          ...this.#o.ipAddresses.map((value) => ({ type: "ip" as const, value })),
        ]),
      ],
    });
    const api = this.#o.certificates;
    const body: V1CertificateSigningRequest = {
      apiVersion: "certificates.k8s.io/v1",
      kind: "CertificateSigningRequest",
      metadata: { generateName: CSR_NAME_PREFIX, labels: { ...CSR_LABELS } },
      spec: {
        request: btoa(request.toString("pem")),
        signerName: this.#signer,
        // "key encipherment" is for RSA key exchange only; this key is ECDSA.
        usages: ["digital signature", "server auth"],
        ...(this.#o.expirationSeconds ? { expirationSeconds: this.#o.expirationSeconds } : {}),
      },
    };
    let created: V1CertificateSigningRequest;
    try {
      created = await api.createCertificateSigningRequest({ body }, withSignal(signal));
    } catch (err) {
      throw fromApiError(
        `Creating a CertificateSigningRequest for signer "${this.#signer}"`,
        err,
      );
    }
    const name = created.metadata!.name!;
    const log = this.#log.with({ csr: name, signer: this.#signer });
    log.info("Created the kubelet serving CSR", {
      ipAddresses: this.#o.ipAddresses,
      dnsNames: this.#o.dnsNames ?? [],
    });
    try {
      if (this.#o.selfApprove ?? true) await this.#approve(created, signal);
      const pem = await this.#awaitCertificate(name, signal);
      const cert = parseLeaf(pem, `CertificateSigningRequest "${name}"`);
      const ours = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
      const theirs = cert.publicKey.export({ type: "spki", format: "der" });
      if (Buffer.compare(theirs, ours) !== 0) {
        throw new InternalError(
          `CertificateSigningRequest "${name}": the issued certificate is not for the requested key`,
        );
      }
      const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
      const issued: Issued = {
        key: x509.PemConverter.encode(pkcs8, "PRIVATE KEY"),
        cert: pem,
        notBefore: Date.parse(cert.validFrom),
        notAfter: Date.parse(cert.validTo),
        csrName: name,
      };
      log.info("Kubelet serving certificate issued", {
        serial: cert.serialNumber,
        notBefore: new Date(issued.notBefore).toISOString(),
        notAfter: new Date(issued.notAfter).toISOString(),
      });
      return issued;
    } finally {
      // Issued, refused or given up: the CSR is not needed any more. Best effort, also when
      // stopping (hence its own short deadline, not `signal`).
      try {
        await api.deleteCertificateSigningRequest(
          { name },
          withSignal(AbortSignal.timeout(5_000)),
        );
      } catch (err) {
        if (!isNotFound(err)) {
          log.warn("Could not delete the kubelet serving CSR; the CSR cleaner will", {
            error: errorMessage(err),
          });
        }
      }
    }
  }

  /** Adds the Approved condition through the approval subresource (retried on conflicts). */
  async #approve(csr: V1CertificateSigningRequest, signal: AbortSignal): Promise<void> {
    const api = this.#o.certificates;
    const name = csr.metadata!.name!;
    for (let attempt = 0;; attempt++) {
      const now = new Date();
      const body: V1CertificateSigningRequest = {
        ...csr,
        status: {
          ...csr.status,
          conditions: [
            ...(csr.status?.conditions ?? []),
            {
              type: "Approved",
              status: "True",
              reason: "AranyaApproved",
              message: `Approved by aranya for its kubelet API server (node "${this.#o.nodeName}")`,
              lastUpdateTime: now,
              lastTransitionTime: now,
            },
          ],
        },
      };
      try {
        await api.replaceCertificateSigningRequestApproval({ name, body }, withSignal(signal));
        return;
      } catch (err) {
        if (apiStatus(err) !== 409 || attempt >= 4) {
          throw fromApiError(`Approving CertificateSigningRequest "${name}"`, err);
        }
      }
      try {
        csr = await api.readCertificateSigningRequest({ name }, withSignal(signal));
      } catch (err) {
        throw fromApiError(`Reading CertificateSigningRequest "${name}"`, err);
      }
    }
  }

  /** Polls the CSR until it has a certificate; throws on Denied, Failed, deletion or timeout. */
  async #awaitCertificate(name: string, signal: AbortSignal): Promise<string> {
    const timeoutMs = this.#o.signTimeoutMs ?? SERVING_CERT_DEFAULTS.signTimeoutMs;
    const deadline = performance.now() + timeoutMs;
    const backoff = new Backoff({ initialMs: 100, maxMs: 2_000, factor: 1.6 });
    const what = `CertificateSigningRequest "${name}" (signer "${this.#signer}")`;
    for (;;) {
      let csr: V1CertificateSigningRequest;
      try {
        csr = await this.#o.certificates.readCertificateSigningRequest(
          { name },
          withSignal(signal),
        );
      } catch (err) {
        if (signal.aborted) throw new CanceledError(`Waiting for ${what} canceled`);
        if (isNotFound(err)) {
          throw new NotFoundError(`${what} was deleted before it was signed`, { cause: err });
        }
        throw fromApiError(`Reading ${what}`, err);
      }
      for (const c of csr.status?.conditions ?? []) {
        if ((c.type === "Denied" || c.type === "Failed") && c.status !== "False") {
          const why = `${c.reason ? `reason "${c.reason}"` : "no reason"}${
            c.message ? `, message "${c.message}"` : ""
          }`;
          throw c.type === "Denied"
            ? new ForbiddenError(`${what} was denied (${why})`)
            : new InternalError(`${what} failed: the signer refused it (${why})`);
        }
      }
      const cert = csr.status?.certificate;
      if (cert) return decodeBase64Text(cert, `The certificate of ${what}`);
      const left = deadline - performance.now();
      if (left <= 0) {
        const approved = (csr.status?.conditions ?? []).some((c) => c.type === "Approved");
        throw new TimeoutError(
          `${what} was not signed within ${Math.round(timeoutMs / 1000)} s (${
            approved
              ? "approved; is the signer running, e.g. kube-controller-manager with " +
                "--cluster-signing-cert-file/--cluster-signing-key-file?"
              : "never approved"
          })`,
        );
      }
      try {
        await sleep(Math.min(left, backoff.next()), signal);
      } catch {
        throw new CanceledError(`Waiting for ${what} canceled`);
      }
    }
  }
}

/** Calls every listener with `kc`; a throwing listener is logged. */
/**
 * The first certificate of a source, shared by every `run`: on failure `ready`
 * is rejected (with CanceledError when `signal` aborted first, and then
 * undefined is returned) and the error rethrown. The caller keeps the result,
 * then resolves `ready` (so `current()` works for whoever awaits it).
 */
async function firstCertificate<T>(
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

function emit(listeners: ((kc: KeyCert) => void)[], kc: KeyCert, log: Logger): void {
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
function parseLeaf(pem: string, what: string): X509Certificate {
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

/** Options of {@link ReloadingServingCertificate}. */
export interface ReloadingServingCertificateOptions {
  /** What is read, for messages: `Secret "ns/name"`. */
  what: string;
  /** Reads the pair; throws a clear error (it is checked with {@link checkKeyCert} after). */
  load(signal: AbortSignal): Promise<KeyCert>;
  /** Re-read interval, ms (default 1 min). */
  refreshMs?: number;
  log?: Logger;
}

/**
 * A certificate read from somewhere outside and re-read every `refreshMs`; `onChange` fires when
 * the key or certificate text changed. The first read failing (missing, malformed, key not
 * matching) rejects `ready`; later failures are logged and the previous pair keeps serving.
 */
export class ReloadingServingCertificate implements ServingCertificate {
  readonly #o: ReloadingServingCertificateOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly #listeners: ((kc: KeyCert) => void)[] = [];
  #current: KeyCert | undefined;
  #started = false;

  constructor(opts: ReloadingServingCertificateOptions) {
    const refresh = opts.refreshMs ?? SERVING_CERT_DEFAULTS.refreshMs;
    if (!(refresh > 0)) {
      throw new InvalidInputError(`${opts.what}: refresh interval ${refresh} ms is not positive`);
    }
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({
      component: "kubelet-serving-cert",
      source: opts.what,
    });
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  current(): KeyCert {
    if (!this.#current) {
      throw new InternalError(
        `The kubelet serving certificate from ${this.#o.what} is not read yet`,
      );
    }
    return { ...this.#current };
  }

  onChange(fn: (kc: KeyCert) => void): void {
    this.#listeners.push(fn);
  }

  async run(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new InternalError(`Serving certificate run was called twice`);
    this.#started = true;
    const first = await firstCertificate(this.#ready, signal, () => this.#read(signal));
    if (!first) return;
    this.#current = first;
    this.#ready.resolve();
    const refreshMs = this.#o.refreshMs ?? SERVING_CERT_DEFAULTS.refreshMs;
    for (;;) {
      try {
        await sleep(refreshMs, signal);
      } catch {
        return;
      }
      try {
        const next = await this.#read(signal);
        if (next.key === this.#current.key && next.cert === this.#current.cert) continue;
        this.#current = next;
        this.#log.info("Kubelet serving certificate changed");
        emit(this.#listeners, { ...next }, this.#log);
      } catch (err) {
        if (signal.aborted) return;
        this.#log.warn(
          "Re-reading the kubelet serving certificate failed; the previous one serves",
          {
            error: errorMessage(err),
          },
        );
      }
    }
  }

  async #read(signal: AbortSignal): Promise<KeyCert> {
    const kc = await this.#o.load(signal);
    const notAfter = checkKeyCert(kc, this.#o.what);
    if (notAfter <= Date.now()) {
      this.#log.error("The kubelet serving certificate has expired", {
        notAfter: new Date(notAfter).toISOString(),
      });
    }
    return kc;
  }
}

/** Options of {@link SecretServingCertificate}. */
export interface SecretServingCertificateOptions {
  /** `clients.core` of aranya's kube clients (needs `get` on the Secret). */
  core: Pick<KubeClients["core"], "readNamespacedSecret">;
  namespace: string;
  name: string;
  /** Re-read interval, ms (default 1 min). */
  refreshMs?: number;
  log?: Logger;
}

/**
 * The certificate of a Secret's `tls.crt` and `tls.key` (a `kubernetes.io/tls` Secret, e.g.
 * from cert-manager; other types with both keys are taken too), re-read every `refreshMs`.
 * Errors name the Secret: not found, a key missing or empty, a malformed certificate or key.
 */
export class SecretServingCertificate extends ReloadingServingCertificate {
  constructor(opts: SecretServingCertificateOptions) {
    const what = `Secret "${opts.namespace}/${opts.name}"`;
    super({
      what,
      refreshMs: opts.refreshMs,
      log: opts.log,
      load: async (signal) => {
        let secret;
        try {
          secret = await opts.core.readNamespacedSecret(
            { namespace: opts.namespace, name: opts.name },
            withSignal(signal),
          );
        } catch (err) {
          if (isNotFound(err)) {
            throw new NotFoundError(`${what} (the kubelet serving certificate) not found`, {
              cause: err,
            });
          }
          throw fromApiError(`Reading ${what}`, err);
        }
        const field = (k: string) => {
          const v = secret.data?.[k];
          if (!v) throw new InvalidInputError(`${what} has no "${k}" (or it is empty)`);
          return decodeBase64Text(v, `"${k}" of ${what}`);
        };
        return { cert: field("tls.crt"), key: field("tls.key") };
      },
    });
  }
}

/** Options of {@link FileServingCertificate}. */
export interface FileServingCertificateOptions {
  /** PEM certificate (chain) file. */
  certFile: string;
  /** PEM private key file. */
  keyFile: string;
  /** Re-read interval, ms (default 1 min). */
  refreshMs?: number;
  log?: Logger;
}

/** The certificate of a PEM file pair, re-read every `refreshMs`; errors name the file. */
export class FileServingCertificate extends ReloadingServingCertificate {
  constructor(opts: FileServingCertificateOptions) {
    const read = async (file: string, what: string) => {
      try {
        return await Deno.readTextFile(file);
      } catch (err) {
        if (err instanceof Deno.errors.NotFound) {
          throw new NotFoundError(`Kubelet serving ${what} file "${file}" does not exist`, {
            cause: err,
          });
        }
        throw new InvalidInputError(
          `Cannot read the kubelet serving ${what} file "${file}": ${errorMessage(err)}`,
          { cause: err },
        );
      }
    };
    super({
      what: `files "${opts.certFile}" and "${opts.keyFile}"`,
      refreshMs: opts.refreshMs,
      log: opts.log,
      load: async () => ({
        cert: await read(opts.certFile, "certificate"),
        key: await read(opts.keyFile, "key"),
      }),
    });
  }
}
