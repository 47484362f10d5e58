/**
 * The smoke runs of the benches (they must not rot): a bench as a
 * subprocess under the e2e permission set, which must exit 0 and end with
 * one JSON line naming it. The figures are the bench's; the smoke tests only
 * check they were measured.
 */
import assert from "node:assert/strict";
import { ROOT } from "@aranya/e2e/paths";

/** Runs `deno run -P=e2e <script> <args>` (script relative to the repo); returns its closing JSON. */
export async function runBench(
  bench: string,
  script: string,
  args: string[],
  // deno-lint-ignore no-explicit-any
): Promise<any> {
  const out = await new Deno.Command("deno", {
    args: ["run", `--config=${ROOT}/deno.json`, "-P=e2e", `${ROOT}/${script}`, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(
    out.code,
    0,
    `bench:${bench} failed:\n${stdout.slice(-2000)}\n${stderr.slice(-4000)}`,
  );
  const last = JSON.parse(stdout.trim().split("\n").at(-1)!);
  assert.equal(last.bench, bench);
  return last;
}
