/**
 * `@aranya/common`: what aranya and arhat share, imported by path through this
 * package's exports (`@aranya/common/errors`, `@aranya/common/session/session_client`):
 * the `Link` interface and the session layer on it, the envelope, domain errors,
 * the JSON-lines logger, lifecycle, back-off and sleep, config helpers, base64
 * and shell quoting.
 *
 * @module
 */
export {};
