/** Pod commands: ensure, delete, list (CMD_POD_*). */
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { InvalidInputError } from "@aranya/common/errors";
import {
  PodDeleteCmdSchema,
  PodEnsureCmdSchema,
  PodListCmdSchema,
  PodStatusListMsgSchema,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { PodManager } from "../pods/pod_manager.ts";
import type { PodStatusInit } from "../pods/pod_status.ts";
import type { Handler } from "./agent.ts";
import { decodePayload } from "./decode.ts";

/** Encodes one pod status as a PodStatusMsg payload. */
export function encodePodStatus(s: PodStatusInit): Uint8Array {
  return toBinary(PodStatusMsgSchema, create(PodStatusMsgSchema, s));
}

/** The pod command handlers over `pods`. */
export function podHandlers(pods: PodManager): [CmdKind, Handler][] {
  return [
    [CmdKind.CMD_POD_ENSURE, {
      unary: async ({ payload }) => {
        const cmd = decodePayload(PodEnsureCmdSchema, payload);
        if (!cmd.uid || !cmd.name || !cmd.namespace) {
          throw new InvalidInputError("PodEnsureCmd needs uid, namespace and name");
        }
        return { kind: MsgKind.MSG_POD_STATUS, payload: encodePodStatus(await pods.ensure(cmd)) };
      },
    }],
    [CmdKind.CMD_POD_DELETE, {
      unary: async ({ payload }) => {
        const cmd = decodePayload(PodDeleteCmdSchema, payload);
        const s = await pods.delete(cmd.uid, Number(cmd.graceSeconds));
        return { kind: MsgKind.MSG_POD_STATUS, payload: encodePodStatus(s) };
      },
    }],
    [CmdKind.CMD_POD_LIST, {
      unary: async ({ payload }) => {
        const cmd = decodePayload(PodListCmdSchema, payload);
        const list = await pods.list(cmd.uids);
        return {
          kind: MsgKind.MSG_POD_STATUS_LIST,
          payload: toBinary(PodStatusListMsgSchema, create(PodStatusListMsgSchema, { pods: list })),
        };
      },
    }],
  ];
}
