/**
 * A device-side dispatcher for tests of the session layer and the
 * transports (not used by arhat itself):
 *
 * - CMD_NODE_INFO_GET (unary): replies MSG_NODE_STATUS with the same payload;
 * - CMD_POD_LIST (unary): never answers; records the abort it gets;
 * - CMD_POD_ENSURE (unary): fails with NotFoundError;
 * - CMD_EXEC / CMD_PORT_FORWARD (stream): echoes input to stdout; at end of
 *   input writes "bye" to stderr and exits with the payload's first byte;
 * - CMD_LOGS (stream): streams until canceled; payload "device-cancel" makes
 *   the device cancel it after the first output instead;
 * - anything else: not supported.
 */
import { CmdKind, MsgKind } from "../../envelope.ts";
import { CanceledError, NotFoundError } from "../../errors.ts";
import type { Dispatcher, StreamContext, StreamHandler, UnaryHandler } from "../session_server.ts";

/** What the dispatcher observed, for assertions. */
export interface EchoObservations {
  /** Sids of CMD_POD_LIST sessions whose signal aborted. */
  aborted: Set<bigint>;
  /** Resize events received. */
  resizes: { cols: number; rows: number }[];
  /** Number of commands started. */
  started: number;
}

/** Creates the dispatcher and its observations. */
export function echoDispatcher(): { dispatcher: Dispatcher; seen: EchoObservations } {
  const seen: EchoObservations = { aborted: new Set(), resizes: [], started: 0 };
  const echoStream: StreamHandler = async (ctx: StreamContext) => {
    seen.started++;
    ctx.onResize((size) => seen.resizes.push(size));
    await ctx.ready();
    for await (const chunk of ctx.input) await ctx.stdout(chunk);
    await ctx.stderr(new TextEncoder().encode("bye"));
    return ctx.payload[0] ?? 0;
  };
  const unary = new Map<CmdKind, UnaryHandler>([
    [CmdKind.CMD_NODE_INFO_GET, (cmd) => {
      seen.started++;
      return Promise.resolve({ kind: MsgKind.MSG_NODE_STATUS, payload: cmd.payload });
    }],
    [CmdKind.CMD_POD_LIST, (cmd) => {
      seen.started++;
      return new Promise((_, reject) => {
        cmd.signal.addEventListener("abort", () => {
          seen.aborted.add(cmd.sid);
          reject(new CanceledError("aborted"));
        }, { once: true });
      });
    }],
    [CmdKind.CMD_POD_ENSURE, () => {
      seen.started++;
      return Promise.reject(new NotFoundError('Pod "x" does not exist'));
    }],
  ]);
  const stream = new Map<CmdKind, StreamHandler>([
    [CmdKind.CMD_EXEC, echoStream],
    [CmdKind.CMD_PORT_FORWARD, echoStream],
    [CmdKind.CMD_LOGS, async (ctx) => {
      seen.started++;
      await ctx.ready();
      await ctx.stdout(new TextEncoder().encode("line\n"));
      if (new TextDecoder().decode(ctx.payload) === "device-cancel") {
        throw new CanceledError("The device stopped the log stream");
      }
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        ctx.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      seen.aborted.add(ctx.sid);
      return 0;
    }],
  ]);
  return {
    seen,
    dispatcher: {
      handler(kind) {
        const u = unary.get(kind);
        if (u) return { unary: u };
        const s = stream.get(kind);
        if (s) return { stream: s };
        return undefined;
      },
    },
  };
}
