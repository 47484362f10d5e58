/**
 * Exec and attach between a client's channels (SPDY streams or WebSocket
 * channels, see spdy_upgrade.ts and websocket_channels.ts) and a stream
 * session to the device: stdin to the device, stdout/stderr back, terminal
 * resizes through, and the outcome as the Kubernetes status object that
 * remotecommand clients expect on their error/status channel (exit codes as
 * reason NonZeroExitCode with an ExitCode cause, which kubectl turns into its
 * own exit code).
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind } from "@aranya/common/envelope";
import { AranyaError, CanceledError, errorMessage, ExitCodeError } from "@aranya/common/errors";
import type { SessionClient } from "@aranya/common/session/session_client";
import { ExecCmdSchema } from "@aranya/proto/gen/aranya/stream_pb";
import type { StreamQuery } from "./routes.ts";
import { pumpInput } from "./stream_util.ts";

/** A terminal size from the client. */
export interface TerminalSize {
  cols: number;
  rows: number;
}

/** The client's side of a remote command. */
export interface CommandChannels {
  /** The client's stdin; ends at its EOF. Absent when stdin was not requested. */
  stdin?: ReadableStream<Uint8Array>;
  /**
   * Output to the client, in order; must not throw. Resolves when the client's connection has
   * taken it, when it returns a promise (the device is granted more output only then: flow
   * control, link.proto).
   */
  stdout(data: Uint8Array): void | Promise<void>;
  stderr(data: Uint8Array): void | Promise<void>;
  /** Terminal sizes, when a tty was requested. */
  resizes?: AsyncIterable<TerminalSize>;
  /** Aborts when the client went away: the device session is canceled. */
  signal: AbortSignal;
}

/** Where a remote command runs. */
export interface CommandTarget {
  client: SessionClient;
  /** Empty for the virtual pod's host container. */
  podUid: string;
  container: string;
  /** Longest wait for the device to start the session, ms. */
  creationTimeoutMs?: number;
}

/** The `metav1.Status` written on the error (v1-v4) or status (v4/v5) channel. */
export interface CommandStatus {
  metadata: Record<string, never>;
  status: "Success" | "Failure";
  message?: string;
  reason?: string;
  code?: number;
  details?: { causes: { reason: string; message: string }[] };
}

/** The status for a finished command. */
export function exitStatus(exitCode: number, command: string[]): CommandStatus {
  if (exitCode === 0) return { metadata: {}, status: "Success" };
  return {
    metadata: {},
    status: "Failure",
    message: `command terminated with non-zero exit code: error executing command ${
      JSON.stringify(command)
    }, exit code ${exitCode}`,
    reason: "NonZeroExitCode",
    details: { causes: [{ reason: "ExitCode", message: String(exitCode) }] },
  };
}

const HTTP_CODES: Record<string, [number, string]> = {
  "not-found": [404, "NotFound"],
  "invalid-input": [400, "BadRequest"],
  "not-supported": [400, "BadRequest"],
  "forbidden": [403, "Forbidden"],
  "unauthenticated": [401, "Unauthorized"],
  "timeout": [504, "Timeout"],
  "unavailable": [503, "ServiceUnavailable"],
};

/** The status for a command that failed to run (the device's error, a timeout, the link). */
export function errorStatus(err: unknown): CommandStatus {
  const [code, reason] = err instanceof AranyaError
    ? HTTP_CODES[err.kind] ?? [500, "InternalError"]
    : [500, "InternalError"];
  return { metadata: {}, status: "Failure", message: errorMessage(err), reason, code };
}

/** How long an exec with a terminal waits for the client's first terminal size, ms. */
const INITIAL_SIZE_WAIT_MS = 1_000;

/**
 * Runs an exec (`command` non-empty) or attach on the device and resolves with
 * the status to report. Never rejects: failures become a Failure status.
 */
export async function runRemoteCommand(
  target: CommandTarget,
  query: StreamQuery,
  channels: CommandChannels,
): Promise<CommandStatus> {
  const attach = query.command.length === 0;
  // With a terminal, the client sends its size right after the streams are up: wait a moment
  // for it, so the command starts with the right size (a program that asks at once sees it).
  const sizes = query.tty && channels.resizes
    ? channels.resizes[Symbol.asyncIterator]()
    : undefined;
  let pending = sizes?.next();
  let first: TerminalSize | undefined;
  if (pending) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = await Promise.race([
      pending.then((r) => ({ r })),
      new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), INITIAL_SIZE_WAIT_MS)),
    ]);
    clearTimeout(timer);
    if (waited) {
      pending = undefined;
      first = waited.r.done ? undefined : waited.r.value;
    }
  }
  const payload = toBinary(
    ExecCmdSchema,
    create(ExecCmdSchema, {
      podUid: target.podUid,
      container: target.container,
      command: query.command,
      stdin: query.stdin,
      stdout: query.stdout,
      stderr: query.stderr,
      tty: query.tty,
      cols: first?.cols ?? 0,
      rows: first?.rows ?? 0,
    }),
  );
  const session = target.client.stream(attach ? CmdKind.CMD_ATTACH : CmdKind.CMD_EXEC, payload, {
    onStdout: (d) => channels.stdout(d),
    onStderr: (d) => (query.tty ? channels.stdout(d) : channels.stderr(d)),
    creationTimeoutMs: target.creationTimeoutMs,
    signal: channels.signal,
  });
  const pumps: Promise<void>[] = [];
  if (channels.stdin) pumps.push(pumpInput(channels.stdin, session));
  if (sizes) {
    pumps.push((async () => {
      await session.ready;
      for (;;) {
        const next = await (pending ?? sizes.next());
        pending = undefined;
        if (next.done) break;
        await session.resize(next.value.cols, next.value.rows);
      }
    })());
  }
  // Input pumps end with the session (its writes reject once it ended).
  for (const p of pumps) p.catch(() => {});
  try {
    const { exitCode } = await session.done;
    return exitStatus(exitCode, query.command);
  } catch (err) {
    // The device reports a non-zero exit as an exit-code error.
    if (err instanceof ExitCodeError) return exitStatus(err.exitCode, query.command);
    if (err instanceof CanceledError && channels.signal.aborted) {
      return errorStatus(new CanceledError("The client closed the connection"));
    }
    return errorStatus(err);
  }
}
