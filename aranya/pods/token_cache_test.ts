import assert from "node:assert/strict";
import { TOKEN_MAX_AGE_MS, TokenCache, tokenRefreshAt, type TokenRequest } from "./token_cache.ts";

const req = (uid = "u1", expirationSeconds = 3607): TokenRequest => ({
  namespace: "ns",
  serviceAccount: "default",
  audiences: [],
  expirationSeconds,
  pod: { name: "p", uid },
});

Deno.test("token refresh time: 80% of the lifetime, at most 24 hours after issue", () => {
  assert.equal(tokenRefreshAt(0, 1000_000), 800_000);
  assert.equal(tokenRefreshAt(1000, 1000 + 3607_000), 1000 + 3607_000 * 0.8);
  // A one-year token (the API server's extended kube-api-access tokens) is refreshed daily.
  assert.equal(tokenRefreshAt(0, 365 * 24 * 3600_000), TOKEN_MAX_AGE_MS);
  assert.equal(tokenRefreshAt(5, 5), 5, "an already expired token is due at once");
});

Deno.test("token cache: one request per pod until 80% of the TTL, then a new token", async () => {
  let now = 1_000_000;
  let n = 0;
  const cache = new TokenCache({
    now: () => now,
    mint: () => Promise.resolve({ token: `t${++n}` }),
  });
  assert.equal(await cache.get(req()), "t1");
  assert.equal(await cache.get(req()), "t1", "served from the cache");
  assert.equal(cache.minted, 1);
  assert.equal(cache.nextRefresh("u1"), 1_000_000 + 3607_000 * 0.8);
  // Another pod, another audience or lifetime: tokens of their own.
  assert.equal(await cache.get(req("u2")), "t2");
  assert.equal(await cache.get({ ...req(), audiences: ["vault"] }), "t3");
  assert.equal(await cache.get(req("u1", 600)), "t4");
  assert.equal(cache.nextRefresh("u1"), 1_000_000 + 600_000 * 0.8, "the earliest of the pod's");
  now += 3607_000 * 0.8 - 1;
  assert.equal(await cache.get(req()), "t1", "just before 80%");
  now += 1;
  assert.equal(await cache.get(req()), "t5", "refreshed at 80%");
  assert.equal(await cache.get(req()), "t5");
  cache.forget("u1");
  assert.equal(cache.nextRefresh("u1"), undefined);
  assert.equal(await cache.get(req()), "t6", "a forgotten pod's token is requested again");
});

Deno.test("token cache: the lifetime the API server granted counts, not the one asked for", async () => {
  const now = 0;
  const cache = new TokenCache({
    now: () => now,
    mint: () => Promise.resolve({ token: "t", ttlSeconds: 1000 }),
  });
  await cache.get(req("u1", 3607));
  assert.equal(cache.nextRefresh("u1"), 800_000);
});

Deno.test("token cache: concurrent resolutions share one request; a failed refresh keeps a valid token", async () => {
  let now = 0;
  let fail = false;
  let n = 0;
  const cache = new TokenCache({
    now: () => now,
    mint: async () => {
      await new Promise((r) => setTimeout(r, 5));
      if (fail) throw new Error("API down");
      return { token: `t${++n}` }; // the lifetime asked for
    },
  });
  const [a, b] = await Promise.all([cache.get(req()), cache.get(req())]);
  assert.equal(a, "t1");
  assert.equal(b, "t1");
  assert.equal(cache.minted, 1);
  fail = true;
  now = 3607_000 * 0.9;
  assert.equal(await cache.get(req()), "t1", "still valid: kept");
  assert.equal(cache.nextRefresh("u1"), now + 10_000, "tried again in 10 s, not at once");
  assert.equal(await cache.get(req()), "t1");
  assert.equal(cache.minted, 2, "no request until then");
  now = 3607_000;
  await assert.rejects(cache.get(req()), /API down/);
});
