/**
 * A small run of bench:probes (it must not rot): the real bench as a
 * subprocess with a few hundred exec probes, and its closing JSON line. The
 * figures are the bench's; here they must only have been measured.
 */
import assert from "node:assert/strict";
import { runBench } from "../smoke.ts";

Deno.test({
  name: "bench:probes smoke run: measures and ends with one JSON summary",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const last = await runBench("probes", "bench/probes/main.ts", [
      "--probes",
      "150",
      "--containers",
      "3",
      "--timeout-min",
      "8",
    ]);
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
