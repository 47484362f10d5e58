/**
 * The transport's own rules against a local HTTP server: a 429 is retried
 * after its Retry-After, at most 3 times; no more than `maxInFlight`
 * requests are in flight at once, an urgent one takes the next free slot
 * first; an attempt past `timeoutMs` fails and frees its slot. (The API calls themselves are tested
 * against the real API server in client_test.ts and informer_test.ts.)
 */
import assert from "node:assert/strict";
import { ApiError, KubeHttp } from "./kube_http.ts";
import { apiStatus, fromApiError } from "./errors.ts";

function serve(handler: (req: Request) => Promise<Response> | Response) {
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

Deno.test("an attempt longer than timeoutMs fails with a TimeoutError; the slot is freed", async () => {
  let stall = true;
  const stalled = Promise.withResolvers<void>();
  const { server, access } = serve(async () => {
    if (stall) await stalled.promise;
    return Response.json({ ok: true });
  });
  const http = new KubeHttp(access, { timeoutMs: 300, maxInFlight: 1 });
  try {
    await assert.rejects(
      http.request({ method: "GET", path: "/slow" }),
      (err: unknown) => {
        assert.ok(err instanceof DOMException && err.name === "TimeoutError", String(err));
        // Not mistaken for an HTTP status (a DOMException's own code is 23).
        assert.equal(apiStatus(err), undefined);
        assert.doesNotMatch(fromApiError("Reading x", err).message, /HTTP/);
        return true;
      },
    );
    stall = false;
    // The one slot came back: the next request goes through.
    assert.deepEqual(await http.request({ method: "GET", path: "/fast" }), { ok: true });
  } finally {
    stalled.resolve();
    http.close();
    await server.shutdown();
  }
});

Deno.test("an urgent request takes the next free slot before the others waiting", async () => {
  const order: string[] = [];
  const gate = Promise.withResolvers<void>();
  let held = false;
  const { server, access } = serve(async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/hold") {
      held = true;
      await gate.promise;
    } else order.push(path);
    return Response.json({});
  });
  const http = new KubeHttp(access, { maxInFlight: 1 });
  try {
    // The one slot is taken by /hold; then two others wait, and one urgent after them.
    const hold = http.request({ method: "GET", path: "/hold" });
    while (!held) await new Promise((r) => setTimeout(r, 5));
    const rest = [
      http.request({ method: "GET", path: "/a" }),
      http.request({ method: "GET", path: "/b" }),
      http.request({ method: "GET", path: "/lease", urgent: true }),
    ];
    gate.resolve();
    await Promise.all([hold, ...rest]);
    assert.deepEqual(order, ["/lease", "/a", "/b"]);
  } finally {
    http.close();
    await server.shutdown();
  }
});
