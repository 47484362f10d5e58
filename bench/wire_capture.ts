/**
 * Counts the bytes that cross the loopback interface on given TCP ports, with
 * tcpdump writing a pcap file that we sum up ourselves (frame lengths, so
 * TCP/IP headers and ACKs count, as they would on a metered link).
 */
import { type ServiceProcess, startService } from "@aranya/e2e/process";

/** A running capture. */
export interface Capture {
  /** The pcap file tcpdump writes. */
  readonly file: string;
  /** Stops tcpdump and returns packets and bytes seen (and per port for `splitPorts`). */
  stop(splitPorts?: number[]): Promise<PcapSummary>;
}

/** Packets and bytes, in total and per TCP port of interest. */
export interface PcapSummary {
  packets: number;
  bytes: number;
  /** For each port asked for: the packets and bytes with that source or destination port. */
  byPort: Map<number, { packets: number; bytes: number }>;
}

/** One captured TCP/IPv4 frame. */
export interface WirePacket {
  /** Capture time, seconds since the epoch. */
  t: number;
  srcPort: number;
  dstPort: number;
  /** Frame length on the wire (Ethernet, IP and TCP headers included). */
  bytes: number;
  /** TCP payload length (0 for a pure ACK). */
  payload: number;
  /** The first bytes of the TCP payload that the snapshot length kept. */
  head: Uint8Array;
}

/**
 * Reads a pcap file (Ethernet framing, as tcpdump writes for "lo"): every
 * frame's length, and for TCP over IPv4 its ports and payload. Frames that are
 * not TCP/IPv4 have ports 0.
 */
export function readPcap(data: Uint8Array): WirePacket[] {
  const out: WirePacket[] = [];
  if (data.byteLength < 24) return out;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const magic = view.getUint32(0, true);
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const big = view.getUint32(0, false);
  if (!little && big !== 0xa1b2c3d4 && big !== 0xa1b23c4d) {
    throw new Error(`Not a pcap file (magic 0x${magic.toString(16)})`);
  }
  const nano = (little ? magic : big) === 0xa1b23c4d;
  let off = 24;
  while (off + 16 <= data.byteLength) {
    const sec = view.getUint32(off, little);
    const frac = view.getUint32(off + 4, little);
    const incl = view.getUint32(off + 8, little);
    const orig = view.getUint32(off + 12, little);
    const p: WirePacket = {
      t: sec + frac / (nano ? 1e9 : 1e6),
      srcPort: 0,
      dstPort: 0,
      bytes: orig,
      payload: 0,
      head: new Uint8Array(),
    };
    const frame = off + 16;
    // Ethernet (14) + IPv4 with protocol TCP: ports follow the IP header.
    if (incl >= 14 + 20 + 4 && view.getUint16(frame + 12) === 0x0800) {
      const ihl = (view.getUint8(frame + 14) & 0x0f) * 4;
      const ipTotal = view.getUint16(frame + 14 + 2);
      if (view.getUint8(frame + 14 + 9) === 6 && incl >= 14 + ihl + 13) {
        const tcp = frame + 14 + ihl;
        p.srcPort = view.getUint16(tcp);
        p.dstPort = view.getUint16(tcp + 2);
        const thl = (view.getUint8(tcp + 12) >> 4) * 4;
        p.payload = Math.max(0, ipTotal - ihl - thl);
        const headFrom = tcp + thl;
        const headTo = Math.min(frame + incl, headFrom + p.payload);
        if (headTo > headFrom) p.head = data.slice(headFrom, headTo);
      }
    }
    out.push(p);
    off += 16 + incl;
  }
  return out;
}

/** Sums a pcap file: packet count and frame lengths, in total and for the given TCP ports. */
export function sumPcap(data: Uint8Array, ports: number[] = []): PcapSummary {
  const byPort = new Map(ports.map((p) => [p, { packets: 0, bytes: 0 }]));
  let packets = 0;
  let bytes = 0;
  for (const p of readPcap(data)) {
    packets++;
    bytes += p.bytes;
    for (const port of new Set([p.srcPort, p.dstPort])) {
      const e = byPort.get(port);
      if (e) {
        e.packets++;
        e.bytes += p.bytes;
      }
    }
  }
  return { packets, bytes, byPort };
}

/** Starts capturing TCP traffic on `ports` over loopback into `file`. */
export async function startCapture(ports: number[], file: string): Promise<Capture> {
  const filter = ports.map((p) => `tcp port ${p}`).join(" or ");
  const svc: ServiceProcess = await startService({
    name: "tcpdump",
    cmd: "tcpdump",
    args: ["-i", "lo", "-n", "-s", "128", "-U", "-w", file, filter],
    logFile: `${file}.log`,
    pidFile: `${file}.pid`,
  });
  // tcpdump prints "listening on lo" once the capture runs.
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const log = await Deno.readTextFile(`${file}.log`).catch(() => "");
    if (log.includes("listening on")) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    file,
    stop: async (splitPorts?: number[]) => {
      await svc.stop(5_000);
      return sumPcap(await Deno.readFile(file), splitPorts);
    },
  };
}
