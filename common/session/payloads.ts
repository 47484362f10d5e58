/** Codecs of the small payloads the session layer itself reads and writes. */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DoneMsgSchema } from "@aranya/proto/gen/aranya/session_pb";
import {
  StreamContinueMsgSchema,
  StreamWindowCmdSchema,
  TtyResizeCmdSchema,
} from "@aranya/proto/gen/aranya/stream_pb";
import { errorMessage, ProtocolError } from "../errors.ts";

/** Encodes a TtyResizeCmd payload. */
export function encodeResize(cols: number, rows: number): Uint8Array {
  return toBinary(TtyResizeCmdSchema, create(TtyResizeCmdSchema, { cols, rows }));
}

/** Decodes a TtyResizeCmd payload; throws ProtocolError. */
export function decodeResize(payload: Uint8Array): { cols: number; rows: number } {
  try {
    const r = fromBinary(TtyResizeCmdSchema, payload);
    return { cols: r.cols, rows: r.rows };
  } catch (err) {
    throw new ProtocolError(`Malformed TtyResizeCmd: ${errorMessage(err)}`);
  }
}

/** Encodes a DoneMsg payload (empty for exit code 0). */
export function encodeDone(exitCode: number): Uint8Array {
  if (exitCode === 0) return new Uint8Array(0);
  return toBinary(DoneMsgSchema, create(DoneMsgSchema, { exitCode: BigInt(exitCode) }));
}

/** Decodes a DoneMsg payload (empty = exit code 0); throws ProtocolError. */
export function decodeDone(payload: Uint8Array): number {
  if (payload.byteLength === 0) return 0;
  try {
    return Number(fromBinary(DoneMsgSchema, payload).exitCode);
  } catch (err) {
    throw new ProtocolError(`Malformed DoneMsg: ${errorMessage(err)}`);
  }
}

/** Encodes a StreamWindowCmd payload: `bytes` more output the device may send. */
export function encodeWindow(bytes: number): Uint8Array {
  return toBinary(StreamWindowCmdSchema, create(StreamWindowCmdSchema, { bytes }));
}

/** Decodes a StreamWindowCmd payload; throws ProtocolError. */
export function decodeWindow(payload: Uint8Array): number {
  try {
    return fromBinary(StreamWindowCmdSchema, payload).bytes;
  } catch (err) {
    throw new ProtocolError(`Malformed StreamWindowCmd: ${errorMessage(err)}`);
  }
}

/** Encodes a StreamContinueMsg payload (empty without flow control, as devices before it sent). */
export function encodeContinue(flowControl: boolean): Uint8Array {
  if (!flowControl) return new Uint8Array(0);
  return toBinary(StreamContinueMsgSchema, create(StreamContinueMsgSchema, { flowControl }));
}

/** Decodes a StreamContinueMsg payload (empty: no flow control); throws ProtocolError. */
export function decodeContinue(payload: Uint8Array): { flowControl: boolean } {
  if (payload.byteLength === 0) return { flowControl: false };
  try {
    return { flowControl: fromBinary(StreamContinueMsgSchema, payload).flowControl };
  } catch (err) {
    throw new ProtocolError(`Malformed StreamContinueMsg: ${errorMessage(err)}`);
  }
}
