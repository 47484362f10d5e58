/**
 * Asks a connected device for its resource usage (CMD_STATS_GET -> MSG_STATS),
 * what the kubelet API's /stats/summary (`stats_summary.ts`) and
 * /metrics/resource (`resource_metrics.ts`) are made from.
 */
import type { NodeStatsSource } from "./kubelet_server.ts";
import { toSummary } from "./stats_summary.ts";
import { toResourceMetrics } from "./resource_metrics.ts";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { errorMessage, ProtocolError } from "@aranya/common/errors";
import type { SessionClient } from "@aranya/common/session/session_client";
import {
  StatsGetCmdSchema,
  type StatsMsg,
  StatsMsgSchema,
} from "@aranya/proto/gen/aranya/stats_pb";

/** Options for {@link getDeviceStats}. */
export interface DeviceStatsOptions {
  /** How long the device may take, ms (default: the session client's unary timeout). */
  timeoutMs?: number;
  /** Cancels the request (the device is told). */
  signal?: AbortSignal;
}

/**
 * One stats reading from the device behind `client`.
 *
 * Rejects with the session layer's errors (UnavailableError when the device
 * is not connected, TimeoutError, CanceledError, or the device's own error,
 * e.g. NotSupportedError from an arhat that predates CMD_STATS_GET), and with
 * ProtocolError when the device answers with another kind or a malformed
 * StatsMsg.
 */
export async function getDeviceStats(
  client: SessionClient,
  opts: DeviceStatsOptions = {},
): Promise<StatsMsg> {
  const reply = await client.request(
    CmdKind.CMD_STATS_GET,
    toBinary(StatsGetCmdSchema, create(StatsGetCmdSchema)),
    { timeoutMs: opts.timeoutMs, signal: opts.signal },
  );
  const device = client.link.device;
  if (reply.kind !== MsgKind.MSG_STATS) {
    throw new ProtocolError(
      `Device "${device}" answered CMD_STATS_GET with "${
        MsgKind[reply.kind] ?? reply.kind
      }" instead of "MSG_STATS"`,
    );
  }
  try {
    return fromBinary(StatsMsgSchema, reply.payload);
  } catch (err) {
    throw new ProtocolError(`Malformed StatsMsg from device "${device}": ${errorMessage(err)}`);
  }
}

/**
 * The kubelet server's stats source: each request asks the device for fresh
 * stats (no cache: the API server and metrics-server poll at their own pace).
 */
export const deviceStatsSource: NodeStatsSource = {
  async summary(node, client, signal) {
    return toSummary(node, await getDeviceStats(client, { signal }));
  },
  async resourceMetrics(_node, client, signal) {
    return toResourceMetrics(await getDeviceStats(client, { signal }));
  },
};
