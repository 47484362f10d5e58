/** Image commands: CMD_IMAGE_ENSURE -> MSG_IMAGE_STATUS_LIST (one status per image, errors included). */
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { errorMessage } from "@aranya/common/errors";
import {
  ImageEnsureCmdSchema,
  ImageStatusListMsgSchema,
  PullPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerRuntime } from "../runtime/runtime.ts";
import type { Handler } from "./agent.ts";
import { decodePayload } from "./decode.ts";

/** The image handlers. */
export function imageHandlers(runtime: ContainerRuntime): [CmdKind, Handler][] {
  return [[CmdKind.CMD_IMAGE_ENSURE, {
    unary: async ({ payload }) => {
      const cmd = decodePayload(ImageEnsureCmdSchema, payload);
      const images = await Promise.all(
        Object.entries(cmd.images).map(async ([ref, spec]) => {
          try {
            let info = await runtime.inspectImage(ref);
            if (!info || spec.policy === PullPolicy.ALWAYS) {
              const a = spec.auth[0];
              info = await runtime.pullImage(
                ref,
                a
                  ? {
                    server: a.server,
                    username: a.username || undefined,
                    password: a.password || undefined,
                    identityToken: a.identityToken || undefined,
                    registryToken: a.registryToken || undefined,
                  }
                  : undefined,
              );
            }
            return { ref, id: info.id, size: BigInt(info.size), error: "" };
          } catch (err) {
            return { ref, id: "", size: 0n, error: errorMessage(err) };
          }
        }),
      );
      return {
        kind: MsgKind.MSG_IMAGE_STATUS_LIST,
        payload: toBinary(ImageStatusListMsgSchema, create(ImageStatusListMsgSchema, { images })),
      };
    },
  }]];
}
