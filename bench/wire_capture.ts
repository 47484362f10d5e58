/**
 * Counts the bytes that cross the loopback interface on given TCP ports, with
 * tcpdump writing a pcap file that we sum up ourselves (frame lengths, so
 * TCP/IP headers and ACKs count, as they would on a metered link).
 */
import { type ServiceProcess, startService } from "../e2e/process.ts";

/** A running capture. */
export interface Capture {
  /** Stops tcpdump and returns packets and bytes seen. */
  stop(): Promise<{ packets: number; bytes: number }>;
}

/** Sums a pcap file: packet count and original frame lengths. */
export function sumPcap(data: Uint8Array): { packets: number; bytes: number } {
  if (data.byteLength < 24) return { packets: 0, bytes: 0 };
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
    off += 16 + incl;
  }
  return { packets, bytes };
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
    stop: async () => {
      await svc.stop(5_000);
      return sumPcap(await Deno.readFile(file));
    },
  };
}
