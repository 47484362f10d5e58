import assert from "node:assert/strict";
import type { V1ConfigMap, V1Secret } from "@kubernetes/client-node";
import { SourceCache } from "./source_cache.ts";

function fakeApi() {
  const reads: string[] = [];
  let version = 0;
  let fail = false;
  return {
    reads,
    bump: () => version++,
    failNext: () => fail = true,
    sources: {
      secret: (ns: string, name: string): Promise<V1Secret | undefined> => {
        reads.push(`secret ${ns}/${name}`);
        if (fail) {
          fail = false;
          return Promise.reject(new Error("API down"));
        }
        return Promise.resolve(
          name === "missing" ? undefined : { data: { v: btoa(String(version)) } },
        );
      },
      configMap: (ns: string, name: string): Promise<V1ConfigMap | undefined> => {
        reads.push(`configmap ${ns}/${name}`);
        return Promise.resolve({ data: { v: String(version) } });
      },
    },
  };
}

Deno.test("source cache: pods share one read per object within the TTL; new pods read fresh", async () => {
  let now = 0;
  const api = fakeApi();
  const cache = new SourceCache({ sources: api.sources, ttlMs: 10_000, now: () => now });
  const cached = cache.view(false);
  assert.equal((await cached.configMap("ns", "cm"))?.data?.v, "0");
  assert.equal((await cached.configMap("ns", "cm"))?.data?.v, "0");
  await cached.secret("ns", "cm"); // another kind, another object
  assert.equal(await cached.secret("ns", "missing"), undefined);
  assert.equal(await cached.secret("ns", "missing"), undefined, "absence is shared too");
  assert.deepEqual(api.reads, ["configmap ns/cm", "secret ns/cm", "secret ns/missing"]);
  api.bump();
  now = 9_999;
  assert.equal((await cached.configMap("ns", "cm"))?.data?.v, "0", "within the TTL: shared");
  // A new pod: read anew, and the others get that read from then on.
  assert.equal((await cache.view(true).configMap("ns", "cm"))?.data?.v, "1");
  assert.equal(api.reads.length, 4);
  now = 19_999 + 1;
  assert.equal((await cached.configMap("ns", "cm"))?.data?.v, "1");
  assert.equal(api.reads.length, 5, "after the TTL: read again");
});

Deno.test("source cache: failures are not kept, unused objects are dropped", async () => {
  let now = 0;
  const api = fakeApi();
  const cache = new SourceCache({ sources: api.sources, ttlMs: 1000, now: () => now });
  api.failNext();
  await assert.rejects(cache.view(false).secret("ns", "s"), /API down/);
  assert.ok((await cache.view(false).secret("ns", "s"))?.data, "retried, not the failure");
  await cache.view(false).configMap("ns", "c");
  assert.equal(cache.size, 2);
  now = 5000;
  await cache.view(false).configMap("ns", "other");
  assert.equal(cache.size, 1, "Secrets not used for the TTL are gone from memory");
});
