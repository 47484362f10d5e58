import assert from "node:assert/strict";
import { shellQuote } from "./shell_quote.ts";

Deno.test("shellQuote: safe words stay, the rest is single-quoted, and sh reads them back", async () => {
  assert.equal(shellQuote("/usr/bin/env"), "/usr/bin/env");
  assert.equal(shellQuote(""), "''");
  assert.equal(shellQuote("a b"), "'a b'");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  const args = ["plain", "", "two words", "it's", "$HOME", "`id`", "a\nb", "*", "x;y"];
  const out = await new Deno.Command("sh", {
    args: ["-c", `printf '%s\\0' ${args.map(shellQuote).join(" ")}`],
    stdout: "piped",
  }).output();
  assert.deepEqual(new TextDecoder().decode(out.stdout).split("\0").slice(0, -1), args);
});
