/** Node commands: CMD_NODE_INFO_GET -> MSG_NODE_STATUS. */
import { fromBinary } from "@bufbuild/protobuf";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { NodeInfoGetCmd_Kind, NodeInfoGetCmdSchema } from "@aranya/proto/gen/aranya/node_pb";
import type { Handler } from "./agent.ts";

/** Produces the encoded NodeStatusMsg ("all" includes system info). */
export type NodeStatusSource = (kind: "all" | "dynamic") => Promise<Uint8Array>;

/** The node handlers. */
export function nodeHandlers(source: NodeStatusSource): [CmdKind, Handler][] {
  return [[CmdKind.CMD_NODE_INFO_GET, {
    unary: async ({ payload }) => {
      let kind: "all" | "dynamic" = "all";
      try {
        if (fromBinary(NodeInfoGetCmdSchema, payload).kind === NodeInfoGetCmd_Kind.DYNAMIC) {
          kind = "dynamic";
        }
      } catch { /* an empty or unknown payload asks for everything */ }
      return { kind: MsgKind.MSG_NODE_STATUS, payload: await source(kind) };
    },
  }]];
}
