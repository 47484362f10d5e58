/**
 * Field checks and sub-readers shared by aranya's and arhat's config files
 * (both built on {@link ConfigReader}).
 */
import type { ConfigReader } from "./config_reader.ts";

/** A DNS label (RFC 1123). */
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** A DNS subdomain (RFC 1123). */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Problem text unless `v` is a DNS label of at most 63 characters. */
export const checkLabel = (v: string): string | undefined =>
  DNS_LABEL.test(v) && v.length <= 63
    ? undefined
    : 'must be a DNS label (lowercase letters, digits and "-", at most 63 characters)';

/** Problem text unless `v` is a DNS subdomain of at most 253 characters. */
export const checkSubdomain = (v: string): string | undefined =>
  DNS_SUBDOMAIN.test(v) && v.length <= 253
    ? undefined
    : 'must be a DNS subdomain (lowercase letters, digits, "-" and ".", at most 253 characters)';

/** Problem text unless `v` is an absolute path. */
export const checkAbsolute = (v: string): string | undefined =>
  v.startsWith("/") ? undefined : "must be an absolute path";

/** TLS files of a client connection (PEM). */
export interface ClientTlsFiles {
  /** CA bundle that verifies the server; default: system roots. */
  caFile?: string;
  /** Client certificate; set together with `keyFile`. */
  certFile?: string;
  keyFile?: string;
  /** Name to verify in the server certificate when it differs from the host dialed. */
  serverName?: string;
}

/** Reads a client `tls` block: absolute paths, certFile and keyFile together, a DNS serverName. */
export function readClientTls(r: ConfigReader): ClientTlsFiles {
  const tls: ClientTlsFiles = {};
  const caFile = r.string("caFile", { check: checkAbsolute });
  const certFile = r.string("certFile", { check: checkAbsolute });
  const keyFile = r.string("keyFile", { check: checkAbsolute });
  const serverName = r.string("serverName", {
    check: (v) => (DNS_SUBDOMAIN.test(v.toLowerCase()) ? undefined : "must be a DNS name"),
  });
  if (r.has("certFile") !== r.has("keyFile")) {
    const [missing, present] = r.has("certFile")
      ? ["keyFile", "certFile"]
      : ["certFile", "keyFile"];
    r.problems.add(r.pathOf(missing), `is required when ${present} is set`);
  }
  if (caFile !== undefined) tls.caFile = caFile;
  if (certFile !== undefined) tls.certFile = certFile;
  if (keyFile !== undefined) tls.keyFile = keyFile;
  if (serverName !== undefined) tls.serverName = serverName;
  r.finish();
  return tls;
}
