/**
 * JSON with object keys in sorted order, so equal values give equal text whatever order their
 * keys were set in (for hashing and comparing objects). `undefined` members are left out, as
 * JSON.stringify does.
 *
 * @module
 */

/** `v` as JSON with sorted object keys. */
export function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${stableJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v ?? null);
}
