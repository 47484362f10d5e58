import assert from "node:assert/strict";
import { envLookup, expandEnv } from "./env_expand.ts";
import { InvalidInputError } from "./errors.ts";

const ENV = { HOST: "aranya.example.com", EMPTY: "", PORT: "443", TRICKY: "${HOST}" };

Deno.test("expandEnv() substitutes variables and defaults", () => {
  const cases: [string, string][] = [
    ["wss://${HOST}:${PORT}/v1/link", "wss://aranya.example.com:443/v1/link"],
    ["${MISSING:-fallback}", "fallback"],
    ["${EMPTY:-fallback}", "fallback"],
    ["${HOST:-fallback}", "aranya.example.com"],
    ["${MISSING:-}", ""],
    ["${MISSING:-a:-b}", "a:-b"],
    ["${EMPTY}", ""],
    ["${TRICKY}", "${HOST}"], // values are not expanded again
    ["$${HOST}", "${HOST}"],
    ["$HOME and pa$$word", "$HOME and pa$$word"],
    ["no references", "no references"],
  ];
  for (const [text, want] of cases) assert.equal(expandEnv(text, ENV), want, text);
});

Deno.test("expandEnv() refuses unset variables and malformed references", () => {
  const cases: [string, string][] = [
    ["${MISSING}", 'Environment variable "MISSING" is not set and "${MISSING}" gives no default'],
    ["x ${HOST", 'Unterminated "${" in "x ${HOST"'],
    ["${}", 'Invalid variable reference "${}": names are letters, digits and "_"'],
    ["${1X}", 'Invalid variable reference "${1X}": names are letters, digits and "_"'],
    ["${A B:-c}", 'Invalid variable reference "${A B:-c}": names are letters, digits and "_"'],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => expandEnv(text, ENV), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, text);
      assert.equal(err.message, message);
      return true;
    });
  }
});

Deno.test("expandEnv() takes a lookup function and reports lookups that throw", () => {
  const seen: string[] = [];
  const lookup = (name: string) => {
    seen.push(name);
    if (name === "SECRET") throw new Deno.errors.NotCapable('Requires env access to "SECRET"');
    return name === "A" ? "1" : undefined;
  };
  assert.equal(expandEnv("${A}${B:-2}", lookup), "12");
  assert.deepEqual(seen, ["A", "B"]);
  assert.throws(() => expandEnv("${SECRET}", lookup), /Cannot read environment variable "SECRET"/);
  assert.equal(envLookup({ toString: "x" })("toString"), "x");
  assert.equal(envLookup({})("toString"), undefined);
});
