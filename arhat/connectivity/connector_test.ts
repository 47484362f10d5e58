import assert from "node:assert/strict";
import { UnavailableError } from "@aranya/common/errors";
import type { Link, LinkDialer } from "@aranya/common/link";
import { memoryLinkPair } from "@aranya/common/testing/memory_link";
import { Connector } from "./connector.ts";

function fakeDialer(name: string, outcomes: ("ok" | "fail")[]): LinkDialer & { calls: number } {
  const d = {
    transport: name,
    calls: 0,
    dial(_signal: AbortSignal): Promise<Link> {
      const o = outcomes[Math.min(d.calls, outcomes.length - 1)];
      d.calls++;
      if (o === "fail") return Promise.reject(new UnavailableError(`${name} down`));
      const [, device] = memoryLinkPair();
      return Promise.resolve(device);
    },
  };
  return d;
}

Deno.test("connector prefers the lowest priority, falls back, and reconnects after a loss", async () => {
  const primary = fakeDialer("primary", ["fail", "ok", "ok"]);
  const fallback = fakeDialer("fallback", ["ok"]);
  const links: Link[] = [];
  const ac = new AbortController();
  const c = new Connector({
    methods: [
      { dialer: fallback, priority: 10, backoff: { initialMs: 5, maxMs: 10 } },
      { dialer: primary, priority: 0, backoff: { initialMs: 5, maxMs: 10 } },
    ],
    onLink: (l) => links.push(l),
  });
  const running = c.run(ac.signal);
  await c.ready;
  assert.equal(links[0]!.transport, "memory");
  assert.equal(primary.calls, 1); // primary failed first ...
  assert.equal(fallback.calls, 1); // ... so the fallback connected
  links[0]!.close("lost");
  while (links.length < 2) await new Promise((r) => setTimeout(r, 5));
  assert.equal(primary.calls, 2); // after the loss the preferred method is tried first again
  ac.abort();
  await running;
  assert.equal(links[1]!.closed instanceof Promise, true);
  assert.equal((await links[1]!.closed).reason, "arhat is stopping");
});
