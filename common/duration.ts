/**
 * Durations as people write them in config files: Go-style sequences of a
 * decimal number and a unit, e.g. "500ms", "10s", "1m30s", "1.5h".
 */
import { InvalidInputError } from "./errors.ts";

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)/y;

/**
 * Milliseconds in `text`: one or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`
 * (summed, so "1m30s" is 90000), or a bare "0". Fractions below a millisecond are rounded.
 *
 * @throws InvalidInputError when `text` is empty, negative, has no unit or an unknown one.
 */
export function parseDuration(text: string): number {
  const s = text.trim();
  if (s === "0") return 0;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    PART.lastIndex = pos;
    const m = PART.exec(s);
    if (!m) {
      throw new InvalidInputError(
        `Invalid duration "${text}": expected a number and a unit (ms, s, m, h), e.g. "10s" or "1m30s"`,
      );
    }
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    pos = PART.lastIndex;
  }
  if (pos === 0) {
    throw new InvalidInputError(`Invalid duration "${text}": it is empty`);
  }
  return Math.round(total);
}

/** "1m30s"-style text of `ms` (inverse of {@link parseDuration} for whole milliseconds). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  let rest = Math.round(ms);
  let out = "";
  for (const [unit, size] of [["h", 3_600_000], ["m", 60_000], ["s", 1000], ["ms", 1]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  return out;
}
