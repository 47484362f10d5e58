/**
 * Counts the bytes that cross the loopback interface on given TCP ports, with
 * tcpdump writing a pcap file that we sum up ourselves (frame lengths, so
 * TCP/IP headers and ACKs count, as they would on a metered link).
 */
import { type ServiceProcess, startService } from "../e2e/process.ts";

/** A running capture. */
export interface Capture {
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

/**
 * Sums a pcap file: packet count and original frame lengths, in total and for
 * the given TCP ports (Ethernet framing, as tcpdump writes for "lo", IPv4).
 */
export function sumPcap(data: Uint8Array, ports: number[] = []): PcapSummary {
  const byPort = new Map(ports.map((p) => [p, { packets: 0, bytes: 0 }]));
  if (data.byteLength < 24) return { packets: 0, bytes: 0, byPort };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const magic = view.getUint32(0, true);
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (
    !little && view.getUint32(0, false) !== 0xa1b2c3d4 && view.getUint32(0, false) !== 0xa1b23c4d
  ) {
    throw new Error(`Not a pcap file (magic 0x${magic.toString(16)})`);
  }
  let off = 24;
  let packets = 0;
  let bytes = 0;
  while (off + 16 <= data.byteLength) {
    const incl = view.getUint32(off + 8, little);
    const orig = view.getUint32(off + 12, little);
    packets++;
    bytes += orig;
    const frame = off + 16;
    // Ethernet (14) + IPv4 with protocol TCP: ports follow the IP header.
    if (incl >= 14 + 20 + 4 && view.getUint16(frame + 12) === 0x0800) {
      const ihl = (view.getUint8(frame + 14) & 0x0f) * 4;
      if (view.getUint8(frame + 14 + 9) === 6 && incl >= 14 + ihl + 4) {
        const src = view.getUint16(frame + 14 + ihl);
        const dst = view.getUint16(frame + 14 + ihl + 2);
        for (const p of new Set([src, dst])) {
          const e = byPort.get(p);
          if (e) {
            e.packets++;
            e.bytes += orig;
          }
        }
      }
    }
    off += 16 + incl;
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
    stop: async (splitPorts?: number[]) => {
      await svc.stop(5_000);
      return sumPcap(await Deno.readFile(file), splitPorts);
    },
  };
}
