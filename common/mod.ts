/**
 * Code shared by aranya and arhat: the `Link` interface and session layer,
 * domain errors, the JSON-lines logger, lifecycle helpers and config helpers.
 * Filled in by the device-link work; nothing is exported yet.
 *
 * @module
 */
export {};
