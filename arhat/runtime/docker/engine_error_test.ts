import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  CanceledError,
  InternalError,
  InvalidInputError,
  NotFoundError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import { engineMessage, httpError, streamError, transportError } from "./engine_error.ts";

// Bodies as dockerd 20.10 and Podman 4.3 send them (recorded from the test engines).
const cases: [number, string, new (...a: never[]) => Error][] = [
  [404, '{"message":"No such container: nope"}', NotFoundError],
  [
    404,
    '{"cause":"no such container","message":"no container with name or ID \\"nope\\" found: no such container","response":404}',
    NotFoundError,
  ],
  [
    409,
    '{"message":"Conflict. The container name \\"/x\\" is already in use by container \\"52f8\\"."}',
    AlreadyExistsError,
  ],
  [
    500,
    '{"cause":"that name is already in use","message":"container create: creating container storage: the container name \\"x\\" is already in use by cae4","response":500}',
    AlreadyExistsError,
  ],
  [409, '{"message":"Container 52f8 is not running"}', InvalidInputError],
  [
    500,
    '{"cause":"container state improper","message":"can only create exec sessions on running containers: container state improper","response":500}',
    InvalidInputError,
  ],
  [
    500,
    '{"message":"container 36b7 has dependent containers which must be removed before it: 58fd: container already exists"}',
    InvalidInputError,
  ],
  [500, '{"message":"unauthorized: authentication required"}', UnauthenticatedError],
  [
    404,
    '{"message":"manifest for r/aranya-e2e/nope:test not found: manifest unknown: manifest unknown"}',
    NotFoundError,
  ],
  [400, '{"message":"invalid reference format"}', InvalidInputError],
  [
    500,
    '{"message":"failed to create shim task: OCI runtime create failed: unable to apply caps: operation not permitted: unknown"}',
    InternalError,
  ],
  [403, "forbidden", UnauthenticatedError],
];

Deno.test("engine errors: HTTP failures of both engines map to domain errors", () => {
  for (const [status, body, kind] of cases) {
    const err = httpError('Doing "x"', status, engineMessage(body));
    assert.ok(err instanceof kind, `${status} ${body} -> ${err.name}`);
    assert.ok(err.message.startsWith('Doing "x" failed: '), err.message);
  }
  assert.equal(engineMessage("  plain text \n"), "plain text");
  assert.equal(httpError("Doing x", 500, "").message, "Doing x failed: status 500");
});

Deno.test("engine errors: pull failures inside a progress stream", () => {
  const podmanAuth =
    "initializing source docker://r/aranya-e2e/busybox:test: reading manifest test in r/aranya-e2e/busybox: unauthorized: authentication required";
  assert.ok(streamError("Pulling", podmanAuth) instanceof UnauthenticatedError);
  assert.ok(
    streamError(
      "Pulling",
      "reading manifest test in r/nope: manifest unknown: manifest unknown",
    ) instanceof
      NotFoundError,
  );
  assert.ok(
    streamError("Pulling", "denied: requested access to the resource is denied") instanceof
      UnauthenticatedError,
  );
  assert.ok(streamError("Pulling", "unexpected EOF") instanceof InternalError);
});

Deno.test("engine errors: socket failures are unavailable, aborts canceled, others unchanged", () => {
  const fetchFailure = new TypeError("fetch failed", {
    cause: new Error("client error (Connect): No such file or directory (os error 2)"),
  });
  const unavailable = transportError("Doing x", "/s.sock", fetchFailure);
  assert.ok(unavailable instanceof UnavailableError);
  assert.match(unavailable.message, /"\/s\.sock" is unreachable: fetch failed: client error/);
  assert.ok(
    transportError("Doing x", "/s", new Deno.errors.ConnectionRefused("refused")) instanceof
      UnavailableError,
  );
  assert.ok(
    transportError("Doing x", "/s", new DOMException("aborted", "AbortError")) instanceof
      CanceledError,
  );
  const denied = new Deno.errors.NotCapable("Requires net access");
  assert.equal(transportError("Doing x", "/s", denied), denied);
});
