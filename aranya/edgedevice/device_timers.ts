/**
 * An EdgeDevice's `spec.connectivity.timers`, in milliseconds (pure).
 *
 * Each field overrides aranya's default (its config's `node` and `links`
 * sections) for that device, applied by aranya:
 *
 * - `keepaliveInterval`: how often aranya sends a keepalive on the device's
 *   link: websocket (an empty message; the interval reaches the device in the
 *   accept frame, which closes the link after 2.5 intervals of silence) and
 *   gRPC (an HTTP/2 PING); the CRD refuses it for MQTT, whose keepalive is
 *   the device's own with its broker (arhat's `mqtt.keepaliveSeconds`);
 * - `unarySessionTimeout`: how long aranya waits for the reply to one command
 *   (read when the device connects);
 * - `heartbeatInterval`: how often the Node's Lease is renewed while the link
 *   is up (the link's own liveness is the heartbeat: nothing is asked of the
 *   device);
 * - `leaseDuration`: the Lease's duration; raised to 2 heartbeats when set
 *   shorter, so the Node cannot flap between renewals;
 * - `forceNodeStatusSyncInterval`: the longest time between two writes of the
 *   Node status (lastHeartbeatTime) while nothing changes.
 *
 * The CRD refuses values that are not durations or are out of bounds, so a
 * value that still does not parse here is ignored (the default applies).
 */
import { parseDuration } from "@aranya/common/duration";
import type { EdgeDevice } from "./types.ts";

/** The overrides a device's spec sets; unset fields take aranya's defaults. */
export interface DeviceTimers {
  keepaliveMs?: number;
  unaryTimeoutMs?: number;
  heartbeatMs?: number;
  leaseSeconds?: number;
  statusSyncMs?: number;
}

/** The timers `ed` sets (empty without an EdgeDevice or timers). */
export function deviceTimers(ed: EdgeDevice | undefined): DeviceTimers {
  const t = ed?.spec?.connectivity?.timers;
  if (!t) return {};
  const ms = (text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    try {
      const v = parseDuration(text);
      return v > 0 ? v : undefined;
    } catch {
      return undefined;
    }
  };
  const out: DeviceTimers = {};
  const keepalive = ms(t.keepaliveInterval);
  if (keepalive !== undefined) out.keepaliveMs = keepalive;
  const unary = ms(t.unarySessionTimeout);
  if (unary !== undefined) out.unaryTimeoutMs = unary;
  const heartbeat = ms(t.heartbeatInterval);
  if (heartbeat !== undefined) out.heartbeatMs = heartbeat;
  const lease = ms(t.leaseDuration);
  if (lease !== undefined) out.leaseSeconds = Math.max(1, Math.round(lease / 1000));
  const sync = ms(t.forceNodeStatusSyncInterval);
  if (sync !== undefined) out.statusSyncMs = sync;
  return out;
}

/**
 * The Lease duration to write, seconds: at least two heartbeats, so a Lease is
 * never allowed to lapse between two renewals of a live link.
 */
export function leaseSecondsFor(heartbeatMs: number, leaseSeconds: number): number {
  return Math.max(leaseSeconds, Math.ceil((2 * heartbeatMs) / 1000));
}
