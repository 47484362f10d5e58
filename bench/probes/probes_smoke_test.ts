/**
 * A small run of bench:probes (it must not rot): the real bench as a
 * subprocess with a few hundred exec probes, and its closing JSON line. The
 * figures are the bench's; here they must only have been measured.
 */
import assert from "node:assert/strict";
import { ROOT } from "../../e2e/paths.ts";

Deno.test({
  name: "bench:probes smoke run: measures and ends with one JSON summary",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const out = await new Deno.Command("deno", {
      args: [
        "run",
        `--config=${ROOT}/deno.json`,
        "-P=e2e",
        `${ROOT}/bench/probes/main.ts`,
        "--probes",
        "150",
        "--containers",
        "3",
        "--timeout-min",
        "8",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `bench:probes failed:\n${stdout}\n${stderr.slice(-3000)}`);
    const last = JSON.parse(stdout.trim().split("\n").at(-1)!);
    assert.equal(last.bench, "probes");
    for (const engine of ["podman", "docker"]) {
      assert.ok(
        last.summary[`${engine}Probes`] >= 150,
        `${engine}: ${JSON.stringify(last.summary)}`,
      );
      assert.equal(typeof last.summary[`${engine}ProcessesEnd`], "number");
      assert.equal(typeof last.summary[`${engine}RssEndMB`], "number");
    }
  },
});
