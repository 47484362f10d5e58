/**
 * Stream commands on containers: exec, attach, logs, port-forward, and tty
 * resize (which arrives inside the exec/attach session).
 *
 * Port-forward into a pod: arhat dials the pod's own address from the device
 * (its IP on the engine's network; 127.0.0.1 for a hostNetwork pod) and splices
 * the session's bytes into that connection: no engine exec, so nothing is left
 * in the engine (Podman keeps an API exec session's conmon processes for
 * `exit_command_delay`) and no `nc` copies every byte. When nothing listens
 * there (a server bound only to the pod's loopback, which the kubelet reaches
 * from inside the pod's network namespace) or the pod has no address (network
 * "none"), arhat runs `nc 127.0.0.1 <port>` inside the pod's infra container
 * through an exec instead: that needs no privileges or namespace syscalls in
 * arhat (which Deno cannot make), and the infra image (busybox by default)
 * provides `nc`.
 */
import { CmdKind } from "@aranya/common/envelope";
import { errorMessage, InvalidInputError, UnavailableError } from "@aranya/common/errors";
import type { StreamContext } from "@aranya/common/session/session_server";
import {
  ExecCmdSchema,
  LogsCmdSchema,
  PortForwardCmdSchema,
} from "@aranya/proto/gen/aranya/stream_pb";
import type { PodManager } from "../pods/pod_manager.ts";
import type { ContainerRuntime, OutputChunk, StreamHandle } from "../runtime/runtime.ts";
import type { Handler } from "./agent.ts";
import { decodePayload } from "./decode.ts";
import type { HostManagement } from "./handle_host.ts";
import { spliceTcp } from "./tcp_splice.ts";

/** The container the virtual pod's commands address: the device host. */
export const HOST_CONTAINER = "host";

/** Copies runtime output into the session, in order. */
export async function pumpOutput(
  output: ReadableStream<OutputChunk>,
  ctx: StreamContext,
): Promise<void> {
  for await (const chunk of output) {
    if (ctx.signal.aborted) break;
    await (chunk.stream === "stderr" ? ctx.stderr(chunk.data) : ctx.stdout(chunk.data));
  }
}

async function runHandle(handle: StreamHandle, ctx: StreamContext): Promise<number> {
  ctx.onResize(({ cols, rows }) => handle.resize(cols, rows).catch(() => {}));
  const onAbort = () => handle.close();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    await ctx.ready();
    await pumpOutput(handle.output, ctx);
    return await handle.exitCode;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
}

/** Options for {@link streamHandlers}. */
export interface StreamHandlerOptions {
  runtime: ContainerRuntime;
  pods: PodManager;
  /** Handles the virtual pod's `host` container (host management), if configured. */
  host?: HostManagement;
}

function decodeExec(payload: Uint8Array) {
  return decodePayload(ExecCmdSchema, payload);
}

/**
 * A connection to `port` at the pod's `address` (undefined: the pod has none), or undefined when
 * nothing listens there (a server bound only to the pod's loopback): the caller then forwards
 * from inside the pod. Other failures (unreachable, timed out) are errors.
 */
async function dialPod(
  address: string | undefined,
  port: number,
): Promise<Deno.TcpConn | undefined> {
  if (!address) return undefined;
  try {
    return await Deno.connect({ hostname: address, port });
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) return undefined;
    throw new UnavailableError(
      `Connecting to port ${port} of the pod at "${address}" failed: ${errorMessage(err)}`,
    );
  }
}

/** The stream handlers. */
export function streamHandlers(o: StreamHandlerOptions): [CmdKind, Handler][] {
  const execOrAttach = (attach: boolean) => async (ctx: StreamContext) => {
    const cmd = decodeExec(ctx.payload);
    if (cmd.container === HOST_CONTAINER && !cmd.podUid) {
      if (!o.host) throw new InvalidInputError("Host management is not configured on this device");
      return await o.host.exec(ctx, cmd);
    }
    const c = await o.pods.findContainer(cmd.podUid, cmd.container);
    const stdin = cmd.stdin ? ctx.input : undefined;
    const handle = attach
      ? await o.runtime.attach(c.id, { stdin, tty: cmd.tty, signal: ctx.signal })
      : await o.runtime.exec(c.id, {
        cmd: cmd.command,
        env: cmd.env,
        tty: cmd.tty,
        stdin,
        stdout: cmd.stdout || !cmd.stderr,
        stderr: cmd.stderr,
        signal: ctx.signal,
      });
    if (cmd.tty && cmd.cols && cmd.rows) await handle.resize(cmd.cols, cmd.rows).catch(() => {});
    return await runHandle(handle, ctx);
  };
  return [
    [CmdKind.CMD_EXEC, { stream: execOrAttach(false) }],
    [CmdKind.CMD_ATTACH, { stream: execOrAttach(true) }],
    [CmdKind.CMD_LOGS, {
      stream: async (ctx) => {
        const cmd = decodePayload(LogsCmdSchema, ctx.payload);
        if (cmd.container === HOST_CONTAINER && !cmd.podUid) {
          if (!o.host) {
            throw new InvalidInputError("Host management is not configured on this device");
          }
          return await o.host.logs(ctx, cmd.path, cmd.follow);
        }
        const c = await o.pods.findContainer(cmd.podUid, cmd.container, { previous: cmd.previous });
        const since = cmd.since ? Math.floor(Date.parse(cmd.since) / 1000) : undefined;
        if (cmd.since && !Number.isFinite(since)) {
          throw new InvalidInputError(`LogsCmd.since "${cmd.since}" is not an RFC 3339 time`);
        }
        const output = o.runtime.logs(c.id, {
          follow: cmd.follow,
          timestamps: cmd.timestamps,
          since,
          tail: cmd.tailLines >= 0n && cmd.tailLines !== 0n ? Number(cmd.tailLines) : undefined,
          signal: ctx.signal,
        });
        await ctx.ready();
        let budget = cmd.limitBytes > 0n ? Number(cmd.limitBytes) : Infinity;
        for await (const chunk of output) {
          if (ctx.signal.aborted) break;
          const data = chunk.data.byteLength > budget ? chunk.data.subarray(0, budget) : chunk.data;
          budget -= data.byteLength;
          await (chunk.stream === "stderr" ? ctx.stderr(data) : ctx.stdout(data));
          if (budget <= 0) break;
        }
        return 0;
      },
    }],
    [CmdKind.CMD_PORT_FORWARD, {
      stream: async (ctx) => {
        const cmd = decodePayload(PortForwardCmdSchema, ctx.payload);
        if (cmd.port < 1 || cmd.port > 65535) {
          throw new InvalidInputError(`Port ${cmd.port} is outside 1..65535`);
        }
        if ((cmd.network || "tcp") !== "tcp") {
          throw new InvalidInputError(
            `Port-forward network "${cmd.network}" is not supported; only "tcp"`,
          );
        }
        if (!cmd.podUid) {
          if (!o.host) {
            throw new InvalidInputError("Host management is not configured on this device");
          }
          return await o.host.portForward(ctx, cmd.port);
        }
        if (!cmd.address) {
          // The pod's own address, dialled from the device: no engine exec, no process left.
          const conn = await dialPod(await o.pods.addressOf(cmd.podUid), cmd.port);
          if (conn) return await spliceTcp(conn, ctx);
        }
        const infra = await o.pods.infraOf(cmd.podUid);
        const handle = await o.runtime.exec(infra.id, {
          cmd: ["nc", cmd.address || "127.0.0.1", String(cmd.port)],
          stdin: ctx.input,
          stdout: true,
          stderr: true,
          signal: ctx.signal,
        });
        return await runHandle(handle, ctx);
      },
    }],
  ];
}
