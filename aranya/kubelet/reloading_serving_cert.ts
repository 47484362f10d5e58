/**
 * A serving certificate read from outside and re-read periodically: the base
 * of the Secret and file sources. A pair that does not check out (key not of
 * the certificate, unparsable) is refused with its source named, and the last
 * good one is kept.
 *
 * @module
 */
import { sleep } from "@aranya/common/backoff";
import { errorMessage, InternalError, InvalidInputError } from "@aranya/common/errors";
import { readySignal } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";

import { type KeyCert, SERVING_CERT_DEFAULTS, type ServingCertificate } from "./serving_cert.ts";
import { checkKeyCert, emit, firstCertificate } from "./key_cert.ts";

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
