/** The one mapping between domain errors and the wire's `ErrorMsg`. */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ErrorMsg_Kind, ErrorMsgSchema } from "@aranya/proto/gen/aranya/session_pb";
import {
  AlreadyExistsError,
  AranyaError,
  CanceledError,
  errorMessage,
  ExitCodeError,
  ForbiddenError,
  InternalError,
  InvalidInputError,
  NotFoundError,
  NotSupportedError,
  ProtocolError,
  TimeoutError,
} from "../errors.ts";

/** Encodes any thrown value as an ErrorMsg payload. */
export function encodeError(err: unknown): Uint8Array {
  let kind = ErrorMsg_Kind.COMMON;
  let exitCode = 0n;
  if (err instanceof AranyaError) {
    switch (err.kind) {
      case "not-found":
        kind = ErrorMsg_Kind.NOT_FOUND;
        break;
      case "already-exists":
        kind = ErrorMsg_Kind.ALREADY_EXISTS;
        break;
      case "not-supported":
        kind = ErrorMsg_Kind.NOT_SUPPORTED;
        break;
      case "timeout":
        kind = ErrorMsg_Kind.TIMEOUT;
        break;
      case "invalid-input":
      case "protocol":
        kind = ErrorMsg_Kind.INVALID_INPUT;
        break;
      case "forbidden":
      case "unauthenticated":
        kind = ErrorMsg_Kind.FORBIDDEN;
        break;
      case "canceled":
        kind = ErrorMsg_Kind.CANCELED;
        break;
      case "exit-code":
        kind = ErrorMsg_Kind.EXIT_CODE;
        exitCode = BigInt((err as ExitCodeError).exitCode);
        break;
      default:
        kind = ErrorMsg_Kind.COMMON;
    }
  }
  return toBinary(
    ErrorMsgSchema,
    create(ErrorMsgSchema, { kind, description: errorMessage(err), exitCode }),
  );
}

/** Decodes an ErrorMsg payload into the domain error it stands for. */
export function decodeError(payload: Uint8Array): AranyaError {
  let e;
  try {
    e = fromBinary(ErrorMsgSchema, payload);
  } catch (err) {
    return new ProtocolError(`Malformed ErrorMsg: ${errorMessage(err)}`);
  }
  const d = e.description || "The device reported an error without a description";
  switch (e.kind) {
    case ErrorMsg_Kind.NOT_FOUND:
      return new NotFoundError(d);
    case ErrorMsg_Kind.ALREADY_EXISTS:
      return new AlreadyExistsError(d);
    case ErrorMsg_Kind.NOT_SUPPORTED:
      return new NotSupportedError(d);
    case ErrorMsg_Kind.TIMEOUT:
      return new TimeoutError(d);
    case ErrorMsg_Kind.INVALID_INPUT:
      return new InvalidInputError(d);
    case ErrorMsg_Kind.FORBIDDEN:
      return new ForbiddenError(d);
    case ErrorMsg_Kind.CANCELED:
      return new CanceledError(d);
    case ErrorMsg_Kind.EXIT_CODE:
      return new ExitCodeError(Number(e.exitCode), d);
    default:
      return new InternalError(d);
  }
}
