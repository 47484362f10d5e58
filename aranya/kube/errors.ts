/** Maps Kubernetes API failures onto the domain errors, once. */
import {
  AlreadyExistsError,
  type AranyaError,
  errorMessage,
  ForbiddenError,
  InternalError,
  InvalidInputError,
  NotFoundError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";

/** The HTTP status of a client-node ApiException, if `err` is one. */
export function apiStatus(err: unknown): number | undefined {
  // Only an HTTP status: a DOMException (a timeout, an abort) has a numeric `code` of its own.
  if (err instanceof DOMException) return undefined;
  const code = (err as { code?: unknown })?.code;
  return typeof code === "number" ? code : undefined;
}

/** True when the API answered 404. */
export function isNotFound(err: unknown): boolean {
  return apiStatus(err) === 404;
}

/** The domain error for an API failure, naming `what` was attempted. */
export function fromApiError(what: string, err: unknown): AranyaError {
  const status = apiStatus(err);
  const body = (err as { body?: unknown })?.body;
  let detail = errorMessage(err);
  if (typeof body === "string") {
    try {
      detail = (JSON.parse(body) as { message?: string }).message ?? detail;
    } catch { /* not JSON */ }
  }
  const msg = `${what} failed${status ? ` (HTTP ${status})` : ""}: ${detail}`;
  switch (status) {
    case 400:
    case 422:
      return new InvalidInputError(msg, { cause: err });
    case 401:
      return new UnauthenticatedError(msg, { cause: err });
    case 403:
      return new ForbiddenError(msg, { cause: err });
    case 404:
      return new NotFoundError(msg, { cause: err });
    case 409:
      return new AlreadyExistsError(msg, { cause: err });
    case undefined:
      return new UnavailableError(msg, { cause: err });
    default:
      return status >= 500
        ? new UnavailableError(msg, { cause: err })
        : new InternalError(msg, { cause: err });
  }
}
