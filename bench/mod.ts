/**
 * `@aranya/bench`: the benchmarks (`deno task bench:*`), which print figures
 * and end with one JSON line holding a flat `summary`; never part of the
 * test suite's pass/fail except their small smoke runs. Shared parts are
 * exported by path (`@aranya/bench/summary`).
 *
 * @module
 */
export {};
