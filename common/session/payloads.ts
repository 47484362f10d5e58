/** Codecs of the small payloads the session layer itself reads and writes. */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DoneMsgSchema } from "@aranya/proto/gen/aranya/session_pb";
import { TtyResizeCmdSchema } from "@aranya/proto/gen/aranya/stream_pb";
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
