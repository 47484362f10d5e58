/**
 * The serving certificate from a certificate file and a key file, re-read
 * periodically.
 *
 * @module
 */
import { errorMessage, InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { type Logger } from "@aranya/common/log";

import { ReloadingServingCertificate } from "./reloading_serving_cert.ts";

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
