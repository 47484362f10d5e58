/**
 * Encoding and decoding of the link envelopes (`Cmd`, `Msg`) and of the
 * link-level payloads that transports need (state, rejection), through the
 * protobuf-es code generated in proto/gen.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type Cmd,
  CmdKind,
  CmdSchema,
  type Msg,
  MsgKind,
  MsgSchema,
} from "@aranya/proto/gen/aranya/link_pb";
import {
  RejectCmd_Reason,
  RejectCmdSchema,
  StateMsg_Kind,
  StateMsgSchema,
} from "@aranya/proto/gen/aranya/session_pb";
import {
  AlreadyExistsError,
  AranyaError,
  errorMessage,
  InternalError,
  ProtocolError,
  UnauthenticatedError,
} from "./errors.ts";

export { CmdKind, MsgKind, RejectCmd_Reason as RejectReason, StateMsg_Kind as StateKind };
export type { Cmd, Msg };

/** Fields of an envelope, both directions. */
export interface EnvelopeInit<K> {
  kind: K;
  sid: bigint;
  seq: bigint;
  complete: boolean;
  payload: Uint8Array;
}

/** Bytes an envelope adds around its payload, at most (tags, varints, length). */
export const ENVELOPE_OVERHEAD = 40;

/** Encodes a Cmd. */
export function encodeCmd(
  init: EnvelopeInit<CmdKind> & {
    /** A stream command's output window (link.proto, flow control); 0 or absent: none. */
    outputWindow?: number;
  },
): Uint8Array {
  return toBinary(CmdSchema, create(CmdSchema, init));
}

/** Encodes a Msg. */
export function encodeMsg(init: EnvelopeInit<MsgKind>): Uint8Array {
  return toBinary(MsgSchema, create(MsgSchema, init));
}

/** Decodes a Cmd; throws ProtocolError when the bytes are not one. */
export function decodeCmd(frame: Uint8Array): Cmd {
  try {
    return fromBinary(CmdSchema, frame);
  } catch (err) {
    throw new ProtocolError(
      `Malformed Cmd frame of ${frame.byteLength} bytes: ${errorMessage(err)}`,
    );
  }
}

/** Decodes a Msg; throws ProtocolError when the bytes are not one. */
export function decodeMsg(frame: Uint8Array): Msg {
  try {
    return fromBinary(MsgSchema, frame);
  } catch (err) {
    throw new ProtocolError(
      `Malformed Msg frame of ${frame.byteLength} bytes: ${errorMessage(err)}`,
    );
  }
}

/** What a device announces when it comes online (or goes offline). */
export interface StateInit {
  kind: StateMsg_Kind;
  device: string;
  connectionId: string;
  agentVersion?: string;
  /** MQTT: the device's nonce (ONLINE). */
  nonce?: Uint8Array;
  /** MQTT: the proof of the device's link key (common/mqtt_seal.ts). */
  mac?: Uint8Array;
}

/** A complete sid-0 MSG_STATE frame. */
export function stateFrame(s: StateInit): Uint8Array {
  const payload = toBinary(StateMsgSchema, create(StateMsgSchema, s));
  return encodeMsg({ kind: MsgKind.MSG_STATE, sid: 0n, seq: 0n, complete: true, payload });
}

/** Decodes a StateMsg payload; throws ProtocolError. */
export function decodeState(payload: Uint8Array): StateInit {
  try {
    const s = fromBinary(StateMsgSchema, payload);
    return {
      kind: s.kind,
      device: s.device,
      connectionId: s.connectionId,
      agentVersion: s.agentVersion,
      nonce: s.nonce,
      mac: s.mac,
    };
  } catch (err) {
    throw new ProtocolError(`Malformed StateMsg: ${errorMessage(err)}`);
  }
}

/** A complete sid-0 CMD_REJECT frame for `err`. */
export function rejectFrame(err: unknown, connectionId = ""): Uint8Array {
  const reason = err instanceof UnauthenticatedError
    ? RejectCmd_Reason.UNAUTHENTICATED
    : err instanceof AlreadyExistsError
    ? RejectCmd_Reason.ALREADY_CONNECTED
    : err instanceof ProtocolError
    ? RejectCmd_Reason.INVALID_PROTO
    : RejectCmd_Reason.INTERNAL_ERROR;
  const payload = toBinary(
    RejectCmdSchema,
    create(RejectCmdSchema, { reason, message: errorMessage(err), connectionId }),
  );
  return encodeCmd({ kind: CmdKind.CMD_REJECT, sid: 0n, seq: 0n, complete: true, payload });
}

/** The domain error a CMD_REJECT payload stands for, and the connection it names. */
export function decodeReject(payload: Uint8Array): { error: AranyaError; connectionId: string } {
  let r;
  try {
    r = fromBinary(RejectCmdSchema, payload);
  } catch (err) {
    return {
      error: new ProtocolError(`Malformed RejectCmd: ${errorMessage(err)}`),
      connectionId: "",
    };
  }
  const msg = r.message || "aranya refused the connection";
  const error = r.reason === RejectCmd_Reason.UNAUTHENTICATED
    ? new UnauthenticatedError(msg)
    : r.reason === RejectCmd_Reason.ALREADY_CONNECTED
    ? new AlreadyExistsError(msg)
    : r.reason === RejectCmd_Reason.INVALID_PROTO
    ? new ProtocolError(msg)
    : new InternalError(msg);
  return { error, connectionId: r.connectionId };
}
