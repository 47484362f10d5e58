/**
 * Pure helpers of the stream bench: percentiles, medians, rates, ratios and
 * how figures are shown. No I/O.
 */

/**
 * The p-th percentile (0 < p <= 100) by nearest rank of `xs` (any order);
 * null for an empty list.
 */
export function percentile(xs: readonly number[], p: number): number | null {
  if (!(p > 0 && p <= 100)) throw new RangeError(`Percentile ${p} is outside (0, 100]`);
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return null;
  return v[Math.max(0, Math.ceil((p / 100) * v.length) - 1)]!;
}

/** The median of `xs` (mean of the middle two for an even count); null for an empty list. */
export function median(xs: readonly number[]): number | null {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** Megabytes (10^6 bytes) per second for `bytes` moved in `ms` milliseconds. */
export function mbPerSec(bytes: number, ms: number): number {
  if (!(ms > 0)) throw new RangeError(`Duration ${ms} ms is not positive`);
  return bytes / 1e6 / (ms / 1000);
}

/** a / b, or null when either is missing or b is 0. */
export function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : a / b;
}

/** `x` rounded to `digits` significant digits (numbers >= 100 to integers); null stays null. */
export function round(x: number | null, digits = 3): number | null {
  if (x === null || !Number.isFinite(x)) return null;
  if (Math.abs(x) >= 10 ** digits) return Math.round(x);
  return Number(x.toPrecision(digits));
}

/** A figure for people: rounded, with its unit, or "n/a". */
export function show(x: number | null, unit = "", digits = 3): string {
  const r = round(x, digits);
  return r === null ? "n/a" : `${r}${unit}`;
}

/** A ratio for people, e.g. "x4.2", or "n/a". */
export function showRatio(x: number | null): string {
  const r = round(x, 3);
  return r === null ? "n/a" : `x${r}`;
}

/** The latency summary of round trips in milliseconds. */
export interface Latency {
  count: number;
  p50Ms: number | null;
  p99Ms: number | null;
  minMs: number | null;
  maxMs: number | null;
}

/** Summarises round-trip times (ms). */
export function latency(samples: readonly number[]): Latency {
  return {
    count: samples.length,
    p50Ms: round(percentile(samples, 50), 4),
    p99Ms: round(percentile(samples, 99), 4),
    minMs: round(samples.length ? Math.min(...samples) : null, 4),
    maxMs: round(samples.length ? Math.max(...samples) : null, 4),
  };
}
