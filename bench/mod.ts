/**
 * Benchmarks that print figures (never part of `deno task test` pass/fail).
 * Each bench arrives with the feature it measures; nothing is exported yet.
 *
 * @module
 */
export {};
