/**
 * Splits one link's captured bytes by direction and by kind, for bench:link.
 *
 * The link is encrypted (TLS) or sealed (MQTT), so kinds are told apart by
 * shape, not by content. Packets are grouped into exchanges: an exchange
 * starts with a packet carrying data after at least `gapSeconds` of silence
 * on that connection, and every packet until the next one (pure ACKs
 * included) belongs to it. An exchange whose data packets all look like the
 * transport's keepalive (`isKeepalive`: a websocket ping or empty message, a
 * gRPC PING, an MQTT PINGREQ/PINGRESP) is `keepalive`; any other exchange
 * carried session messages, and is named by the kinds aranya counted in the
 * window for the direction that started it (`aranya_link_messages_total`:
 * "sent" for aranya -> device, "received" for device -> aranya), or
 * `unexplained` when aranya counted none. Packets without data after a
 * silence (TCP keepalives, late ACKs) are `tcp`.
 *
 * Each byte is counted in the direction it travels, so the ACKs a message
 * causes count against that message's kind in the other direction, as on a
 * metered link.
 */
import type { WirePacket } from "./wire_capture.ts";

/** Bytes and packets of one kind in one direction. */
export interface KindBytes {
  bytes: number;
  packets: number;
}

/** What one link carried, split by direction and kind. */
export interface LinkWire {
  bytes: number;
  packets: number;
  device_to_aranya: Record<string, KindBytes>;
  aranya_to_device: Record<string, KindBytes>;
  /** Exchanges seen per kind. */
  exchanges: Record<string, number>;
}

/** Options of {@link splitLinkWire}. */
export interface SplitOptions {
  /** Captured packets (any order; other connections' packets are ignored). */
  packets: WirePacket[];
  /** Ports on aranya's side of this link (the listener, or the broker for the device leg). */
  aranyaPorts: number[];
  /**
   * Ports on the device's side, when `aranyaPorts` also carries other links
   * (a broker); default: every port talking to `aranyaPorts`.
   */
  devicePorts?: number[];
  /**
   * For the leg between aranya and a broker: the broker's port is the device's
   * side (what the broker sends aranya comes from devices).
   */
  reversed?: boolean;
  /** True for a data packet that is (part of) a transport keepalive. */
  isKeepalive: (p: WirePacket) => boolean;
  /** Session messages aranya counted in the window: direction -> kind -> count. */
  sessionKinds: { sent: Record<string, number>; received: Record<string, number> };
  /** Silence that separates two exchanges, seconds (default 0.5). */
  gapSeconds?: number;
}

/** Splits a link's packets by direction and kind; see the module doc. */
export function splitLinkWire(o: SplitOptions): LinkWire {
  const server = new Set(o.aranyaPorts);
  const device = o.devicePorts ? new Set(o.devicePorts) : undefined;
  const gap = o.gapSeconds ?? 0.5;
  const mine = o.packets.filter((p) =>
    (server.has(p.srcPort) && (!device || device.has(p.dstPort))) ||
    (server.has(p.dstPort) && (!device || device.has(p.srcPort)))
  ).sort((a, b) => a.t - b.t);
  const out: LinkWire = {
    bytes: 0,
    packets: 0,
    device_to_aranya: {},
    aranya_to_device: {},
    exchanges: {},
  };
  const kindOf = (sent: boolean): string => {
    const counted = sent ? o.sessionKinds.sent : o.sessionKinds.received;
    const kinds = Object.entries(counted).filter(([, n]) => n > 0).map(([k]) => k).sort();
    return kinds.length ? kinds.join("+") : "unexplained";
  };
  // Per connection: the open exchange's packets and when the connection last carried anything.
  const open = new Map<string, { packets: WirePacket[]; last: number }>();
  const close = (ex: WirePacket[]) => {
    if (!ex.length) return;
    const data = ex.filter((p) => p.payload > 0);
    let kind = "tcp";
    if (data.length) {
      const fromAranya = (p: WirePacket) => server.has(p.srcPort) !== (o.reversed ?? false);
      kind = data.every(o.isKeepalive) ? "keepalive" : kindOf(fromAranya(data[0]!));
    }
    out.exchanges[kind] = (out.exchanges[kind] ?? 0) + 1;
    for (const p of ex) {
      const toDevice = server.has(p.srcPort) !== (o.reversed ?? false);
      const side = toDevice ? out.aranya_to_device : out.device_to_aranya;
      const e = side[kind] ??= { bytes: 0, packets: 0 };
      e.bytes += p.bytes;
      e.packets++;
      out.bytes += p.bytes;
      out.packets++;
    }
  };
  for (const p of mine) {
    const conn = server.has(p.srcPort) ? `${p.srcPort}-${p.dstPort}` : `${p.dstPort}-${p.srcPort}`;
    let c = open.get(conn);
    if (!c) open.set(conn, c = { packets: [], last: -Infinity });
    if (p.payload > 0 && p.t - c.last >= gap) {
      close(c.packets);
      c.packets = [];
    } else if (p.payload === 0 && p.t - c.last >= gap && c.packets.length) {
      close(c.packets);
      c.packets = [];
    }
    c.packets.push(p);
    c.last = p.t;
  }
  for (const c of open.values()) close(c.packets);
  return out;
}

/** Keepalive shapes per transport (sizes of the TCP payload, TLS included). */
export const KEEPALIVE_SHAPES: Record<"websocket" | "grpc" | "mqtt", (p: WirePacket) => boolean> = {
  // An empty binary message or a ping/pong (at most a 6-byte masked header, 125 bytes of ping
  // data never used) in one TLS record: 5 header + 1 type + 16 tag, or TLS 1.2's 5 + 8 + 16.
  websocket: (p) => p.payload <= 64,
  // HTTP/2 PING or PING ACK (9 + 8 bytes), maybe with a WINDOW_UPDATE or SETTINGS ACK in the same
  // TLS record or segment.
  grpc: (p) => p.payload <= 96,
  // MQTT PINGREQ (0xc0 0x00) or PINGRESP (0xd0 0x00), plaintext to the broker.
  mqtt: (p) => p.payload === 2 && (p.head[0] === 0xc0 || p.head[0] === 0xd0) && p.head[1] === 0x00,
};
