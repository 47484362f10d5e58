/**
 * Kubernetes resource quantities ("100m", "64Mi", "1.5G", "2e3") as numbers.
 *
 * client-node has a parser, but its package exports do not expose it, so this
 * small one follows the same grammar (apimachinery's resource.Quantity):
 * a signed decimal, then an optional binary suffix (Ki..Ei), decimal suffix
 * (n, u, m, k, M, G, T, P, E) or decimal exponent (e3, E-2).
 */
import { InvalidInputError } from "@aranya/common/errors";

const BINARY: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const DECIMAL: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

const QUANTITY =
  /^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([numkMGTPE]?)|[eE]([+-]?\d+))$/;

/** The value of `q`; throws InvalidInputError when `q` is not a quantity. */
export function parseQuantity(q: string): number {
  const m = QUANTITY.exec(q.trim());
  if (!m) throw new InvalidInputError(`"${q}" is not a resource quantity`);
  const n = Number(m[1]);
  if (m[2]) return n * BINARY[m[2]]!;
  if (m[4] !== undefined) return n * 10 ** Number(m[4]);
  return n * DECIMAL[m[3] ?? ""]!;
}
