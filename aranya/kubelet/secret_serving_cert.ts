/**
 * The serving certificate from a `kubernetes.io/tls` Secret (e.g. made by
 * cert-manager), re-read periodically.
 *
 * @module
 */
import { InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { type Logger } from "@aranya/common/log";
import { type KubeClients, withSignal } from "../kube/client.ts";
import { fromApiError, isNotFound } from "../kube/errors.ts";
import { decodeBase64Text } from "@aranya/common/base64";

import { ReloadingServingCertificate } from "./reloading_serving_cert.ts";

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
