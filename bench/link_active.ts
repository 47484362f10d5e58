/**
 * bench:link's active measurements, per transport over real sockets on
 * 127.0.0.1 (mqtt through a private mosquitto): aranya's link server and
 * session client in this process, the device (bench/link_device.ts: the
 * real dialer and session server with an echo dispatcher) in a child process.
 *
 * - round trip of a 64-byte unary request (p50/p99, µs), sequential;
 * - pipelined unary requests per second (1000 in flight);
 * - the device process's RSS after the traffic.
 *
 * Each figure is the median of `runs` runs. This measures the link stack, not
 * aranya and arhat: the idle figures (link_idle.ts) are the real processes'.
 */
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { StaticAuthenticator } from "@aranya/aranya/connectivity/testing/static_authenticator";
import { CmdKind } from "@aranya/common/envelope";
import type { Link } from "@aranya/common/link";
import { SessionClient } from "@aranya/common/session/session_client";
import { testTls } from "@aranya/e2e/link/test_tls";
import { freePort } from "@aranya/e2e/process";
import type { DeviceConfig } from "./link_device.ts";

/** The transports bench:link knows. */
export type LinkTransport = "websocket" | "grpc" | "mqtt";

/** Options of {@link measureActive}. */
export interface ActiveOptions {
  transports: LinkTransport[];
  /** Sequential requests per run. */
  rttN: number;
  /** Pipelined requests per run. */
  pipelineN: number;
  runs: number;
  say: (line: string) => void;
}

/** Medians of one transport's runs. */
export interface ActiveFigures {
  rtt_p50_us: number;
  rtt_p99_us: number;
  pipelined_msgs_per_s: number;
  device_rss_mb: number;
  rtt_p50_us_per_run: number[];
}

interface Running {
  name: string;
  client: SessionClient;
  device: Deno.ChildProcess;
  deviceOut: ReadableStreamDefaultReader<string>;
  stop(): Promise<void>;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function spawnDevice(config: DeviceConfig) {
  const child = new Deno.Command("deno", {
    args: [
      "run",
      "-P=e2e",
      "--no-prompt",
      new URL("./link_device.ts", import.meta.url).pathname,
      JSON.stringify(config),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
    .getReader();
  return { child, lines };
}

function lineSplitter(): TransformStream<string, string> {
  let buf = "";
  return new TransformStream({
    transform(chunk, c) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        c.enqueue(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    },
  });
}

async function readJson(r: ReadableStreamDefaultReader<string>): Promise<Record<string, unknown>> {
  for (;;) {
    const { value, done } = await r.read();
    if (done) throw new Error("The device process ended early");
    try {
      return JSON.parse(value);
    } catch { /* not ours */ }
  }
}

async function setup(name: LinkTransport): Promise<Running | undefined> {
  const auth = new StaticAuthenticator();
  const registry = new MemoryLinkRegistry();
  const device = `bench/${name}-device`;
  auth.setToken(device, "bench-token");
  let link: Link | undefined;
  const onLink = (l: Link) => link = l;
  const ac = new AbortController();
  const tls = await testTls();
  let config: DeviceConfig;
  let stopExtra = async () => {};
  let running: Promise<void>;
  if (name === "websocket") {
    const { WebSocketLinkServer } = await import(
      "@aranya/aranya/connectivity/websocket/ws_link_server"
    );
    const port = freePort();
    const server = new WebSocketLinkServer({
      hostname: "127.0.0.1",
      port,
      tls: { cert: tls.cert, key: tls.key },
      authenticator: auth,
      registry,
    });
    running = server.run(ac.signal, onLink);
    await server.ready;
    config = {
      transport: name,
      device,
      token: "bench-token",
      address: `wss://localhost:${port}/v1/link`,
      ca: tls.ca,
    };
  } else if (name === "mqtt") {
    const { startMosquitto } = await import("@aranya/e2e/services/mosquitto");
    const { MqttLinkServer } = await import("@aranya/aranya/connectivity/mqtt/mqtt_link_server");
    const broker = await startMosquitto();
    const server = new MqttLinkServer({
      url: `mqtt://${broker.address}`,
      keys: auth,
      registry,
    });
    running = server.run(ac.signal, onLink);
    await server.ready;
    const ns = `bench/${name}`;
    await server.addDevice(device, ns);
    config = {
      transport: name,
      device,
      token: "bench-token",
      address: `mqtt://${broker.address}`,
      messageNamespace: ns,
    };
    stopExtra = () => broker.stop();
  } else {
    const mod = await import("@aranya/aranya/connectivity/grpc/grpc_link_server").catch(() =>
      undefined
    );
    if (!mod) return undefined;
    const server = new mod.GrpcLinkServer({
      hostname: "127.0.0.1",
      port: 0,
      authenticator: auth,
      registry,
    });
    running = server.run(ac.signal, onLink);
    await server.ready;
    config = { transport: name, device, token: "bench-token", address: `127.0.0.1:${server.port}` };
  }
  const { child, lines } = spawnDevice(config);
  await readJson(lines);
  const deadline = Date.now() + 10_000;
  while (!link && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  if (!link) throw new Error(`${name}: aranya never accepted the device`);
  const client = new SessionClient(link, { unaryTimeoutMs: 30_000 });
  client.start();
  return {
    name,
    client,
    device: child,
    deviceOut: lines,
    stop: async () => {
      try {
        await child.stdin.close();
      } catch { /* closed */ }
      await child.status;
      ac.abort();
      await running;
      await stopExtra();
    },
  };
}

async function measureOnce(r: Running, rttN: number, pipeN: number) {
  const payload = new Uint8Array(64);
  for (let i = 0; i < 500; i++) await r.client.request(CmdKind.CMD_NODE_INFO_GET, payload);
  const rtts: number[] = [];
  for (let i = 0; i < rttN; i++) {
    const t = performance.now();
    await r.client.request(CmdKind.CMD_NODE_INFO_GET, payload);
    rtts.push((performance.now() - t) * 1000);
  }
  rtts.sort((a, b) => a - b);
  const t0 = performance.now();
  let sent = 0;
  const window = 1000;
  const worker = async () => {
    while (sent < pipeN) {
      sent++;
      await r.client.request(CmdKind.CMD_NODE_INFO_GET, payload);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  const perSec = pipeN / ((performance.now() - t0) / 1000);
  const w = r.device.stdin.getWriter();
  await w.write(new TextEncoder().encode("rss\n"));
  w.releaseLock();
  const rss = (await readJson(r.deviceOut)).rss as number;
  return {
    rttP50Us: Math.round(percentile(rtts, 0.5)),
    rttP99Us: Math.round(percentile(rtts, 0.99)),
    pipelinedMsgsPerSec: Math.round(perSec),
    deviceRssMB: +(rss / 2 ** 20).toFixed(1),
  };
}

/** Runs the active measurements on every transport asked for, one after another. */
export async function measureActive(
  o: ActiveOptions,
): Promise<Partial<Record<LinkTransport, ActiveFigures>>> {
  const out: Partial<Record<LinkTransport, ActiveFigures>> = {};
  for (const name of o.transports) {
    const r = await setup(name);
    if (!r) {
      o.say(`${name}: not available`);
      continue;
    }
    try {
      const all: Awaited<ReturnType<typeof measureOnce>>[] = [];
      for (let i = 0; i < o.runs; i++) all.push(await measureOnce(r, o.rttN, o.pipelineN));
      const med = (f: (x: typeof all[number]) => number) =>
        all.map(f).sort((a, b) => a - b)[Math.floor(all.length / 2)]!;
      const m: ActiveFigures = {
        rtt_p50_us: med((x) => x.rttP50Us),
        rtt_p99_us: med((x) => x.rttP99Us),
        pipelined_msgs_per_s: med((x) => x.pipelinedMsgsPerSec),
        device_rss_mb: med((x) => x.deviceRssMB),
        rtt_p50_us_per_run: all.map((x) => x.rttP50Us),
      };
      out[name] = m;
      o.say(
        `${name}: round trip p50 ${m.rtt_p50_us} µs, p99 ${m.rtt_p99_us} µs; ${m.pipelined_msgs_per_s} msg/s pipelined; device RSS ${m.device_rss_mb} MB`,
      );
    } finally {
      await r.stop();
    }
  }
  return out;
}
