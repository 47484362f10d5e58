/**
 * The flat `summary` object every bench puts in its closing JSON line: the
 * numbers of its nested figures, one level per key, joined in camel case
 * (`{ podman: { idleRssMB: 68 } }` becomes `{ podmanIdleRssMB: 68 }`). Arrays
 * and nulls are left out; the nested figures stay beside it in full.
 */
export function flatSummary(
  figures: Record<string, unknown>,
  prefix = "",
): Record<string, number | string | boolean> {
  const out: Record<string, number | string | boolean> = {};
  for (const [k, v] of Object.entries(figures)) {
    const key = prefix ? `${prefix}${k[0]!.toUpperCase()}${k.slice(1)}` : k;
    if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") out[key] = v;
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      Object.assign(out, flatSummary(v as Record<string, unknown>, key));
    }
  }
  return out;
}
