/**
 * The flat `summary` object every bench puts in its closing JSON line: the
 * numbers of its nested figures, one level per key. Keys are joined in camel
 * case by default (`{ podman: { idleRssMB: 68 } }` becomes
 * `{ podmanIdleRssMB: 68 }`) or with underscores (`join: "snake"`:
 * `{ idle_bytes_per_day: { websocket: 1 } }` becomes
 * `{ idle_bytes_per_day_websocket: 1 }`). Arrays and nulls are left out; the
 * nested figures stay beside it in full.
 */
export function flatSummary(
  figures: Record<string, unknown>,
  opts: FlatSummaryOptions = {},
): Record<string, number | string | boolean> {
  const join = opts.join ?? "camel";
  const prefix = opts.prefix ?? "";
  const out: Record<string, number | string | boolean> = {};
  for (const [k, v] of Object.entries(figures)) {
    const key = !prefix
      ? k
      : join === "snake"
      ? `${prefix}_${k}`
      : `${prefix}${k[0]!.toUpperCase()}${k.slice(1)}`;
    if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") out[key] = v;
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      Object.assign(out, flatSummary(v as Record<string, unknown>, { join, prefix: key }));
    }
  }
  return out;
}

/** Options of {@link flatSummary}. */
export interface FlatSummaryOptions {
  /** How nested keys are joined: camel case (default) or with "_". */
  join?: "camel" | "snake";
  /** Prefix of every key (joined the same way). */
  prefix?: string;
}
