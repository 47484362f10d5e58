/**
 * The transport's own rules against a local HTTP server: a 429 is retried
 * after its Retry-After, at most 3 times; no more than `maxInFlight`
 * requests are in flight at once. (The API calls themselves are tested
 * against the real API server in client_test.ts and informer_test.ts.)
 */
import assert from "node:assert/strict";
import { ApiError, KubeHttp } from "./kube_http.ts";

function serve(handler: () => Promise<Response> | Response) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  return {
    server,
    access: { server: `http://127.0.0.1:${server.addr.port}`, namespace: "default" },
  };
}

Deno.test("a 429 is retried after its Retry-After, three times at most", async () => {
  let calls = 0;
  const { server, access } = serve(() =>
    ++calls <= 2
      ? new Response("{}", { status: 429, headers: { "Retry-After": "1" } })
      : Response.json({ ok: true })
  );
  const http = new KubeHttp(access);
  try {
    const started = performance.now();
    assert.deepEqual(await http.request({ method: "GET", path: "/x" }), { ok: true });
    assert.equal(calls, 3);
    assert.ok(performance.now() - started >= 900, "waited for Retry-After");
    calls = -10; // always 429 from now on
    await assert.rejects(
      http.request({ method: "GET", path: "/x" }),
      (err: unknown) => err instanceof ApiError && err.code === 429,
    );
    assert.equal(calls, -6, "the first try and 3 retries");
  } finally {
    http.close();
    await server.shutdown();
  }
});

Deno.test("no more than maxInFlight requests are in flight at once", async () => {
  let now = 0, most = 0;
  const { server, access } = serve(async () => {
    most = Math.max(most, ++now);
    await new Promise((r) => setTimeout(r, 50));
    now--;
    return Response.json({});
  });
  const http = new KubeHttp(access, { maxInFlight: 3 });
  try {
    await Promise.all(
      Array.from({ length: 12 }, () => http.request({ method: "GET", path: "/y" })),
    );
    assert.equal(most, 3);
  } finally {
    http.close();
    await server.shutdown();
  }
});
