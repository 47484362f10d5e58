import assert from "node:assert/strict";
import { createLogger, redact } from "./log.ts";

Deno.test("logger writes JSON lines with context and redacts secrets", () => {
  const lines: string[] = [];
  const log = createLogger({
    level: "info",
    sink: (l) => lines.push(l),
    fields: { component: "t" },
  })
    .with({ device: "ns/d" });
  log.debug("hidden");
  log.info("connected", { token: "abc", nested: { password: "p", ok: 1 }, sid: 5n });
  assert.equal(lines.length, 1);
  const o = JSON.parse(lines[0]!);
  assert.equal(o.msg, "connected");
  assert.equal(o.level, "info");
  assert.equal(o.component, "t");
  assert.equal(o.device, "ns/d");
  assert.equal(o.token, "[redacted]");
  assert.deepEqual(o.nested, { password: "[redacted]", ok: 1 });
  assert.equal(o.sid, "5");
  assert.deepEqual(redact({ Authorization: "Bearer x" }), { Authorization: "[redacted]" });
});
