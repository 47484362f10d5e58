import assert from "node:assert/strict";
import { logTail } from "./termination_message.ts";

Deno.test("the fallback message is the log's last 80 lines, at most 2 KiB", () => {
  assert.equal(logTail("a\nb"), "a\nb", "a last line without its newline is kept");
  const lines = Array.from({ length: 100 }, (_, i) => `l${i}`);
  assert.equal(logTail(lines.join("\n") + "\n"), lines.slice(20).join("\n") + "\n");
  assert.equal(logTail(lines.join("\n")), lines.slice(20).join("\n"));
  const long = "x".repeat(5000) + "END";
  assert.equal(logTail(long).length, 2048);
  assert.ok(logTail(long).endsWith("END"));
  assert.equal(logTail(""), "");
});
