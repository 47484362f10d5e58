/**
 * The one place where Docker Engine API failures (HTTP statuses, engine and
 * registry messages, socket errors) become domain errors. dockerd answers
 * `{"message": "..."}`; Podman's compatible service adds `cause` and
 * `response`; registry failures arrive either as an HTTP error or inside a
 * 200 progress stream, depending on the engine.
 */
import {
  AlreadyExistsError,
  type AranyaError,
  CanceledError,
  InternalError,
  InvalidInputError,
  NotFoundError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";

/**
 * Registry wording for refused or missing credentials, whatever the HTTP
 * status ("no basic auth credentials" is dockerd's for an anonymous pull).
 */
const UNAUTHENTICATED = /unauthorized|authentication required|no basic auth credentials/i;
/** More registry wording, only trusted inside a pull's progress stream. */
const PULL_REFUSED =
  /incorrect username or password|access denied|access to the resource is denied/i;
/** Engine or registry wording for a missing container, image or exec instance. */
const MISSING =
  /no such (?:container|image|exec)|manifest unknown|name unknown|repository does not exist/i;
/** Conflicts that mean "the name or thing exists already" (other 409s are state conflicts). */
const EXISTS = /already in use|already exists/i;
/**
 * A request the container's current state does not allow (Podman answers
 * these with 500). Podman ends its "has dependent containers" refusal with
 * "container already exists", so this is checked before {@link EXISTS}.
 */
const STATE = /is not running|state improper|is paused|is restarting|dependent containers/i;

/**
 * The message the engine put in an error body: the JSON `message` (both
 * engines), else the trimmed text.
 */
export function engineMessage(body: string): string {
  const text = body.trim();
  try {
    const obj = JSON.parse(text) as { message?: unknown };
    if (typeof obj?.message === "string" && obj.message) return obj.message;
  } catch { /* not JSON */ }
  return text;
}

/**
 * Maps an engine HTTP failure to a domain error.
 *
 * Contract: `what` says what was attempted in sentence case, e.g.
 * `Starting container "abc"`; the result's message is
 * `<what> failed: <engine message>`. 404 and "no such" messages ->
 * NotFoundError; 409 -> AlreadyExistsError when the engine says the thing
 * exists or the name is in use, InvalidInputError for other state conflicts
 * (for example exec in a stopped container); 401, 403 and registry
 * "unauthorized"/"authentication required" wording (whatever the status) ->
 * UnauthenticatedError; other 4xx -> InvalidInputError; 5xx (Podman's
 * status for most failures) -> by the message: "is not running", "state
 * improper" or "dependent containers" -> InvalidInputError, "already in use"
 * -> AlreadyExistsError, "no such ..." or "manifest unknown" ->
 * NotFoundError, else InternalError.
 */
export function httpError(what: string, status: number, message: string): AranyaError {
  const msg = `${what} failed: ${message || `status ${status}`}`;
  if (status === 401 || status === 403 || UNAUTHENTICATED.test(message)) {
    return new UnauthenticatedError(msg);
  }
  if (status === 404) return new NotFoundError(msg);
  if (status === 409) {
    return EXISTS.test(message) ? new AlreadyExistsError(msg) : new InvalidInputError(msg);
  }
  if (status >= 400 && status < 500) return new InvalidInputError(msg);
  // Podman reports a taken name, a missing object and a state conflict as 500.
  if (STATE.test(message)) return new InvalidInputError(msg);
  if (EXISTS.test(message)) return new AlreadyExistsError(msg);
  if (MISSING.test(message)) return new NotFoundError(msg);
  return new InternalError(msg);
}

/**
 * Maps a failure reported inside a 200 progress stream (pull) to a domain
 * error: registry credential wording ("unauthorized", "authentication
 * required") -> UnauthenticatedError, missing image wording -> NotFoundError,
 * "access denied" wording -> UnauthenticatedError, anything else ->
 * InternalError.
 */
export function streamError(what: string, message: string): AranyaError {
  const msg = `${what} failed: ${message}`;
  if (UNAUTHENTICATED.test(message)) return new UnauthenticatedError(msg);
  if (MISSING.test(message)) return new NotFoundError(msg);
  if (PULL_REFUSED.test(message)) return new UnauthenticatedError(msg);
  return new InternalError(msg);
}

/**
 * Maps an error thrown by fetch or Deno.connect on the engine socket: an
 * abort -> CanceledError; a missing socket, refused or reset connection ->
 * UnavailableError; domain errors and anything else (for example a missing
 * permission) are returned unchanged.
 */
export function transportError(what: string, socket: string, err: unknown): unknown {
  if (err instanceof DOMException && err.name === "AbortError") {
    return new CanceledError(`${what} was canceled`, { cause: err });
  }
  if (
    err instanceof Deno.errors.NotFound ||
    err instanceof Deno.errors.ConnectionRefused ||
    err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.ConnectionAborted ||
    err instanceof Deno.errors.BrokenPipe ||
    // fetch reports socket failures as TypeError ("client error (Connect)", ...).
    (err instanceof TypeError && !(err instanceof Deno.errors.NotCapable))
  ) {
    // fetch says only "fetch failed"; the socket error is in its cause.
    const cause = err instanceof Error && err.cause instanceof Error
      ? `: ${err.cause.message}`
      : "";
    const detail = (err instanceof Error ? err.message : String(err)) + cause;
    return new UnavailableError(
      `${what} failed: container engine at "${socket}" is unreachable: ${detail}`,
      { cause: err },
    );
  }
  return err;
}
