/**
 * The domain errors shared by aranya and arhat. Each boundary maps them once:
 * to HTTP status codes (kubelet API), to wire error kinds (`ErrorMsg.Kind`,
 * see `session/error_map.ts`), to gRPC status codes.
 *
 * Messages are sentence case, quote values, and say what failed and why.
 */

/** Stable names of the error kinds. */
export type ErrorKind =
  | "not-found"
  | "already-exists"
  | "invalid-input"
  | "not-supported"
  | "timeout"
  | "canceled"
  | "unauthenticated"
  | "forbidden"
  | "unavailable"
  | "protocol"
  | "exit-code"
  | "internal";

/** Base of every domain error. */
export abstract class AranyaError extends Error {
  abstract readonly kind: ErrorKind;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The thing asked for does not exist. */
export class NotFoundError extends AranyaError {
  readonly kind = "not-found";
}

/** The thing to create exists already (for example, a device already connected). */
export class AlreadyExistsError extends AranyaError {
  readonly kind = "already-exists";
}

/** The request is malformed or names something invalid. */
export class InvalidInputError extends AranyaError {
  readonly kind = "invalid-input";
}

/** The peer does not support the operation (for example, host exec turned off). */
export class NotSupportedError extends AranyaError {
  readonly kind = "not-supported";
}

/** An operation did not finish in time. */
export class TimeoutError extends AranyaError {
  readonly kind = "timeout";
}

/** An operation was canceled by one of the sides. */
export class CanceledError extends AranyaError {
  readonly kind = "canceled";
}

/** The caller's credentials are missing or wrong. */
export class UnauthenticatedError extends AranyaError {
  readonly kind = "unauthenticated";
}

/** The caller is known but not allowed. */
export class ForbiddenError extends AranyaError {
  readonly kind = "forbidden";
}

/** The peer cannot be reached now (link down, device offline); retrying later may work. */
export class UnavailableError extends AranyaError {
  readonly kind = "unavailable";
}

/** The peer broke the protocol (malformed or oversized frame, bad sequence). */
export class ProtocolError extends AranyaError {
  readonly kind = "protocol";
}

/** Anything else that went wrong on our side. */
export class InternalError extends AranyaError {
  readonly kind = "internal";
}

/** A command ran and exited with a non-zero code. */
export class ExitCodeError extends AranyaError {
  readonly kind = "exit-code";
  constructor(readonly exitCode: number, message?: string) {
    super(message ?? `Command exited with code ${exitCode}`);
  }
}

/** True when `err` is a domain error of `kind`. */
export function isKind(err: unknown, kind: ErrorKind): boolean {
  return err instanceof AranyaError && err.kind === kind;
}

/** The message of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
