import assert from "node:assert/strict";
import { InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { nodeAttributes, parseRoute } from "./routes.ts";

const u = (p: string) => new URL(p, "https://kubelet");

Deno.test("parseRoute: exec and attach with and without the pod uid, kubelet query names", () => {
  assert.deepEqual(
    parseRoute(
      "POST",
      u("/exec/ns/p/c?command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=1"),
    ),
    {
      kind: "exec",
      pod: { namespace: "ns", name: "p", uid: undefined },
      container: "c",
      query: {
        command: ["sh", "-c", "echo hi"],
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
      },
    },
  );
  const attach = parseRoute("GET", u("/attach/ns/p/uid-1/c?stdin=true&stdout=true&stderr=true"));
  assert.equal(attach.kind, "attach");
  assert.deepEqual((attach as { pod: unknown }).pod, { namespace: "ns", name: "p", uid: "uid-1" });
  assert.throws(() => parseRoute("POST", u("/exec/ns/p/c?output=1")), InvalidInputError);
  assert.throws(() => parseRoute("POST", u("/attach/ns/p/c")), /At least one of stdin/);
});

Deno.test("parseRoute: containerLogs options, sinceSeconds turned into a time", () => {
  const now = new Date("2026-01-01T00:01:00Z");
  const r = parseRoute(
    "GET",
    u("/containerLogs/ns/p/c?follow=true&tailLines=5&timestamps=true&previous=true&sinceSeconds=60&limitBytes=10"),
    now,
  );
  assert.deepEqual(r, {
    kind: "logs",
    pod: { namespace: "ns", name: "p" },
    container: "c",
    query: {
      follow: true,
      timestamps: true,
      previous: true,
      tailLines: 5,
      limitBytes: 10,
      since: "2026-01-01T00:00:00.000Z",
    },
  });
  assert.throws(
    () => parseRoute("GET", u("/containerLogs/ns/p/c?tailLines=-2")),
    /"tailLines" must be an integer >= 0, got "-2"/,
  );
  assert.throws(
    () => parseRoute("GET", u("/containerLogs/ns/p/c?sinceTime=yesterday")),
    /"sinceTime" is not an RFC 3339 time/,
  );
  assert.throws(
    () =>
      parseRoute("GET", u("/containerLogs/ns/p/c?sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z")),
    /Only one of/,
  );
});

Deno.test("parseRoute: port-forward ports, node routes, unknown paths", () => {
  assert.deepEqual(parseRoute("GET", u("/portForward/ns/p?ports=80,8080")), {
    kind: "port-forward",
    pod: { namespace: "ns", name: "p", uid: undefined },
    ports: [80, 8080],
  });
  assert.throws(() => parseRoute("GET", u("/portForward/ns/p?ports=99999")), /Port "99999"/);
  assert.equal(parseRoute("GET", u("/stats/summary")).kind, "stats-summary");
  assert.equal(parseRoute("GET", u("/metrics/resource")).kind, "metrics-resource");
  assert.equal(parseRoute("GET", u("/pods")).kind, "pods");
  assert.equal(parseRoute("GET", u("/healthz")).kind, "healthz");
  assert.deepEqual(parseRoute("GET", u("/logs/apt/history.log")), {
    kind: "node-logs",
    path: "apt/history.log",
  });
  assert.throws(() => parseRoute("GET", u("/logs/../etc/shadow")), NotFoundError);
  assert.throws(() => parseRoute("GET", u("/configz")), NotFoundError);
  assert.throws(() => parseRoute("DELETE", u("/pods")), NotFoundError);
  assert.throws(() => parseRoute("GET", u("/run/ns/p/c?cmd=ls")), NotFoundError);
});

Deno.test("nodeAttributes: the kubelet's verb and nodes/ subresource", () => {
  assert.deepEqual(nodeAttributes("POST", "/exec/ns/p/c"), {
    verb: "create",
    subresource: "proxy",
  });
  assert.deepEqual(nodeAttributes("GET", "/containerLogs/ns/p/c"), {
    verb: "get",
    subresource: "proxy",
  });
  assert.deepEqual(nodeAttributes("GET", "/stats/summary"), { verb: "get", subresource: "stats" });
  assert.deepEqual(nodeAttributes("GET", "/metrics/resource"), {
    verb: "get",
    subresource: "metrics",
  });
  assert.deepEqual(nodeAttributes("GET", "/logs/syslog"), { verb: "get", subresource: "log" });
  assert.deepEqual(nodeAttributes("GET", "/spec/"), { verb: "get", subresource: "spec" });
  assert.deepEqual(nodeAttributes("PUT", "/pods"), { verb: "update", subresource: "proxy" });
});
