import assert from "node:assert/strict";
import { parseQuantity } from "./quantity.ts";

Deno.test("quantities: binary, decimal and exponent forms", () => {
  assert.equal(parseQuantity("64Mi"), 64 * 1024 * 1024);
  assert.equal(parseQuantity("1Gi"), 2 ** 30);
  assert.equal(parseQuantity("100m"), 0.1);
  assert.equal(parseQuantity("2"), 2);
  assert.equal(parseQuantity("1.5G"), 1.5e9);
  assert.equal(parseQuantity("2e3"), 2000);
  assert.equal(parseQuantity("500k"), 500_000);
});

Deno.test("quantities: garbage is refused with the value quoted", () => {
  assert.throws(() => parseQuantity("12 apples"), /"12 apples" is not a resource quantity/);
  assert.throws(() => parseQuantity("Mi"), /not a resource quantity/);
});
