/**
 * One forwarded connection between a client's data channel (a SPDY stream
 * pair or a WebSocket channel pair) and a port-forward stream session to the
 * device (which connects to the port inside the pod's network namespace, or
 * on the host for the virtual pod).
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind } from "@aranya/common/envelope";
import { errorMessage } from "@aranya/common/errors";
import type { SessionClient } from "@aranya/common/session/session_client";
import { PortForwardCmdSchema } from "@aranya/proto/gen/aranya/stream_pb";
import { pumpInput } from "./stream_util.ts";
import { concatBytes } from "@aranya/common/bytes";

/** Where forwarded connections go. */
export interface ForwardTarget {
  client: SessionClient;
  /** Empty for the virtual pod (the device host). */
  podUid: string;
  /** "namespace/name", for messages. */
  podKey: string;
  creationTimeoutMs?: number;
}

/** The client's side of one forwarded connection. */
export interface ForwardChannel {
  /** Bytes from the client; ends when the client half-closes. */
  input: ReadableStream<Uint8Array>;
  /**
   * Bytes to the client, in order; must not throw. Resolves when the client's connection has
   * taken them, when it returns a promise (the device is granted more output only then: flow
   * control, link.proto).
   */
  output(data: Uint8Array): void | Promise<void>;
  /** Aborts when the client went away. */
  signal: AbortSignal;
}

/**
 * Forwards one connection to `port` until both directions ended. Resolves
 * with undefined on a clean end, or with the error message to report on the
 * client's error channel. Never rejects.
 */
export async function forwardConnection(
  target: ForwardTarget,
  port: number,
  channel: ForwardChannel,
): Promise<string | undefined> {
  const payload = toBinary(
    PortForwardCmdSchema,
    create(PortForwardCmdSchema, { podUid: target.podUid, port, network: "tcp" }),
  );
  const diagnostics: Uint8Array[] = [];
  const session = target.client.stream(CmdKind.CMD_PORT_FORWARD, payload, {
    onStdout: (d) => channel.output(d),
    onStderr: (d) => {
      if (diagnostics.length < 16) diagnostics.push(d);
    },
    creationTimeoutMs: target.creationTimeoutMs,
    signal: channel.signal,
  });
  const upload = pumpInput(channel.input, session);
  upload.catch(() => {});
  const prefix = `Forwarding port ${port} of pod "${target.podKey}" failed`;
  try {
    const { exitCode } = await session.done;
    if (exitCode === 0) return undefined;
    const why = new TextDecoder().decode(concatBytes(diagnostics)).trim();
    return `${prefix}: ${why || `the device's forwarder exited with code ${exitCode}`}`;
  } catch (err) {
    if (channel.signal.aborted) return undefined;
    return `${prefix}: ${errorMessage(err)}`;
  }
}
