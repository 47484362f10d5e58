/**
 * `GET /containerLogs/...`: a logs stream session to the device, copied to
 * the HTTP response as it arrives (chunked, so `kubectl logs -f` follows).
 * Until the device started the session, failures are proper HTTP errors
 * (container not found, device offline, timeout); after that the response
 * simply ends.
 */
import type { ServerResponse } from "node:http";
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind } from "@aranya/common/envelope";
import type { SessionClient } from "@aranya/common/session/session_client";
import { LogsCmdSchema } from "@aranya/proto/gen/aranya/stream_pb";
import type { LogsQuery } from "./routes.ts";
import { taken } from "./stream_util.ts";

/** Where the logs come from. */
export interface LogsTarget {
  client: SessionClient;
  /** Empty for the virtual pod's host container. */
  podUid: string;
  container: string;
  /** Host log file (virtual pod only), relative to the device's host log folder. */
  path?: string;
  creationTimeoutMs?: number;
}

/**
 * Streams the logs into `res`. Rejects (with nothing written) when the device
 * refused or never started the session; resolves when the logs ended or the
 * client went away.
 */
export async function streamContainerLogs(
  target: LogsTarget,
  query: LogsQuery,
  res: ServerResponse,
): Promise<void> {
  const abort = new AbortController();
  res.once("close", () => abort.abort());
  const pending: Uint8Array[] = [];
  let started = false;
  // Resolves when the response has taken the bytes: the device is granted more log output only
  // then (flow control, link.proto), so a slow reader slows the device, not aranya's memory.
  const write = (d: Uint8Array): Promise<void> | undefined => {
    if (started) return taken((done) => res.write(d, done));
    pending.push(d);
    return undefined;
  };
  const session = target.client.stream(
    CmdKind.CMD_LOGS,
    toBinary(
      LogsCmdSchema,
      create(LogsCmdSchema, {
        podUid: target.podUid,
        container: target.container,
        follow: query.follow,
        timestamps: query.timestamps,
        previous: query.previous,
        since: query.since ?? "",
        tailLines: query.tailLines === undefined ? -1n : BigInt(query.tailLines),
        limitBytes: BigInt(query.limitBytes ?? 0),
        path: target.path ?? "",
      }),
    ),
    {
      onStdout: write,
      onStderr: write,
      creationTimeoutMs: target.creationTimeoutMs,
      signal: abort.signal,
    },
  );
  await session.ready;
  started = true;
  res.writeHead(200, {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-cache, private",
    "x-content-type-options": "nosniff",
  });
  res.flushHeaders();
  for (const d of pending.splice(0)) res.write(d);
  try {
    await session.done;
  } catch {
    // Started: the stream just ends (the client sees the output it got).
  }
  await endApart(res);
}

/**
 * Ends a chunked response so that its last data and its end do not reach the
 * reader in one read: the API server's WebSocket log stream (wsstream's
 * messageCopy) drops the bytes of a read that also returns EOF, and Go's
 * chunked reader returns both when the terminating chunk is already
 * buffered. Node would send `write` and `end` of one tick in one segment; the
 * kubelet flushes each write, so its end comes apart. The data leaves at
 * once (nothing corks the socket); the end follows after a short pause.
 */
async function endApart(res: ServerResponse): Promise<void> {
  if (!res.destroyed) await new Promise((resolve) => setTimeout(resolve, END_GAP_MS));
  res.end();
}

/** The pause between the last data and the end of a logs response, ms. */
const END_GAP_MS = 25;
