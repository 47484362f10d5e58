/**
 * The serving certificate from a CertificateSigningRequest: a fresh ECDSA P-256
 * key and a `certificates.k8s.io/v1` CSR for the signer
 * `kubernetes.io/kubelet-serving` (subject `CN=system:node:<name>`,
 * `O=system:nodes`, the address as IP SAN), approved by aranya itself and
 * signed by kube-controller-manager's cluster signer, as a kubelet with
 * `serverTLSBootstrap` gets its certificate; renewed at a fraction of its
 * life (default 0.8). The default on a cluster (serving_cert.ts).
 *
 * @module
 */
// @peculiar/x509 needs a Reflect metadata polyfill (tsyringe) loaded BEFORE it: keep this order.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import type { V1CertificateSigningRequest } from "@kubernetes/client-node";
import type { CertificatesApi } from "../kube/apis.ts";
import { Buffer } from "node:buffer";
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
import { withSignal } from "../kube/client.ts";
import { apiStatus, fromApiError, isNotFound } from "../kube/errors.ts";
import { decodeBase64Text } from "@aranya/common/base64";

import {
  CSR_LABELS,
  CSR_NAME_PREFIX,
  type KeyCert,
  KUBELET_SERVING_SIGNER,
  SERVING_CERT_DEFAULTS,
  type ServingCertificate,
} from "./serving_cert.ts";
import { emit, firstCertificate, parseLeaf } from "./key_cert.ts";

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
