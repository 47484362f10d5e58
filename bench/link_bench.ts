/**
 * `deno task bench:link`: per transport, over real sockets on 127.0.0.1
 * (mqtt through a real mosquitto), with aranya's side in this process and the
 * device in a child process:
 *
 * - round trip of a 64-byte unary request (p50/p99, µs), sequential;
 * - pipelined unary requests per second (1000 in flight);
 * - RSS of each side after the traffic;
 * - idle bytes on the wire over a window (default 10 min, all transports at
 *   once; ARANYA_BENCH_IDLE_SECONDS to change), counted by tcpdump on
 *   loopback (frames, so TCP/IP headers and ACKs count), extrapolated to a day.
 *
 * ARANYA_BENCH_TRANSPORTS (comma list), ARANYA_BENCH_RTT_N and
 * ARANYA_BENCH_PIPELINE_N narrow a run.
 *
 * Anchors: KubeEdge idle ~2.7 MB/day per node; goals: idle <= 200 KB/day,
 * websocket round trip p50 <= 100 µs. The last line is one JSON object.
 */
import { flatSummary } from "./summary.ts";
import { MemoryLinkRegistry } from "../aranya/connectivity/registry.ts";
import { StaticAuthenticator } from "../aranya/connectivity/static_authenticator.ts";
import { CmdKind } from "../common/envelope.ts";
import type { Link } from "../common/link.ts";
import { SessionClient } from "../common/session/session_client.ts";
import { testTls } from "../e2e/link/test_tls.ts";
import { CACHE, ensureDir } from "../e2e/paths.ts";
import { freePort } from "../e2e/process.ts";
import type { DeviceConfig } from "./link_device.ts";
import { startCapture } from "./wire_capture.ts";
import { machineInfo } from "./machine.ts";

const IDLE_SECONDS = Number(Deno.env.get("ARANYA_BENCH_IDLE_SECONDS") ?? 600);
const RTT_N = Number(Deno.env.get("ARANYA_BENCH_RTT_N") ?? 5000);
const PIPE_N = Number(Deno.env.get("ARANYA_BENCH_PIPELINE_N") ?? 20000);
/** Repetitions of the active measurements; the median of each figure is reported. */
const RUNS = Number(Deno.env.get("ARANYA_BENCH_RUNS") ?? 3);
const TRANSPORTS = (Deno.env.get("ARANYA_BENCH_TRANSPORTS") ?? "websocket,mqtt,grpc").split(",");

interface Running {
  name: string;
  /** Client ports of the device's own connection, found after it connected (mqtt). */
  devicePorts?: () => Promise<number[]>;
  client: SessionClient;
  /** Ports whose traffic is this transport's. */
  ports: number[];
  device: Deno.ChildProcess;
  deviceOut: ReadableStreamDefaultReader<string>;
  stop(): Promise<void>;
  note?: string;
}

const say = (s: string) => console.error(`[bench:link] ${s}`);

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

async function setup(name: "websocket" | "mqtt" | "grpc"): Promise<Running | undefined> {
  const auth = new StaticAuthenticator();
  const registry = new MemoryLinkRegistry();
  const device = `bench/${name}-device`;
  auth.setToken(device, "bench-token");
  let link: Link | undefined;
  const onLink = (l: Link) => link = l;
  const ac = new AbortController();
  const tls = await testTls();
  let config: DeviceConfig;
  let ports: number[];
  let stopExtra = async () => {};
  let running: Promise<void>;
  let note: string | undefined;
  let devicePorts: (() => Promise<number[]>) | undefined;
  if (name === "websocket") {
    const { WebSocketLinkServer } = await import(
      "../aranya/connectivity/websocket/ws_link_server.ts"
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
    ports = [port];
    config = {
      transport: name,
      device,
      token: "bench-token",
      address: `wss://localhost:${port}/v1/link`,
      ca: tls.ca,
    };
  } else if (name === "mqtt") {
    const { startMosquitto } = await import("../e2e/services/mosquitto.ts");
    const { MqttLinkServer } = await import("../aranya/connectivity/mqtt/mqtt_link_server.ts");
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
    ports = [Number(broker.address.split(":")[1])];
    config = {
      transport: name,
      device,
      token: "bench-token",
      address: `mqtt://${broker.address}`,
      messageNamespace: ns,
    };
    stopExtra = () => broker.stop();
    note = "idleBytesPerDay counts the device's broker connection; aranya's own broker " +
      "connection (shared by every device of the broker) is reported apart";
    devicePorts = async () => {
      // mosquitto logs "New client connected from 127.0.0.1:PORT as arhat-...".
      const log = await Deno.readTextFile(broker.logFile);
      return [...log.matchAll(/New client connected from 127\.0\.0\.1:(\d+) as arhat-/g)]
        .map((m) => Number(m[1]));
    };
  } else {
    const mod = await import("../aranya/connectivity/grpc/grpc_link_server.ts").catch(() =>
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
    ports = [server.port];
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
    ports,
    device: child,
    deviceOut: lines,
    note,
    devicePorts,
    stop: async () => {
      try {
        child.stdin.close();
      } catch { /* closed */ }
      await child.status;
      ac.abort();
      await running;
      await stopExtra();
    },
  };
}

async function measureActive(r: Running) {
  const payload = new Uint8Array(64);
  for (let i = 0; i < 500; i++) await r.client.request(CmdKind.CMD_NODE_INFO_GET, payload);
  const rtts: number[] = [];
  for (let i = 0; i < RTT_N; i++) {
    const t = performance.now();
    await r.client.request(CmdKind.CMD_NODE_INFO_GET, payload);
    rtts.push((performance.now() - t) * 1000);
  }
  rtts.sort((a, b) => a - b);
  const t0 = performance.now();
  let sent = 0;
  const window = 1000;
  const worker = async () => {
    while (sent < PIPE_N) {
      sent++;
      await r.client.request(CmdKind.CMD_NODE_INFO_GET, payload);
    }
  };
  await Promise.all(Array.from({ length: window }, worker));
  const perSec = PIPE_N / ((performance.now() - t0) / 1000);
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

if (import.meta.main) {
  const machine = machineInfo();
  say(
    `machine: ${
      JSON.stringify(machine)
    }; ${RUNS} runs of ${RTT_N} sequential and ${PIPE_N} pipelined requests per transport (median reported); idle window ${IDLE_SECONDS} s`,
  );
  const results: Record<string, Record<string, unknown>> = {};
  const runs: Running[] = [];
  for (const name of ["websocket", "mqtt", "grpc"] as const) {
    if (!TRANSPORTS.includes(name)) continue;
    const r = await setup(name);
    if (!r) {
      say(`${name}: not available`);
      continue;
    }
    runs.push(r);
    const all: Awaited<ReturnType<typeof measureActive>>[] = [];
    for (let i = 0; i < RUNS; i++) all.push(await measureActive(r));
    const med = (f: (x: typeof all[number]) => number) =>
      all.map(f).sort((a, b) => a - b)[Math.floor(all.length / 2)]!;
    const m = {
      rttP50Us: med((x) => x.rttP50Us),
      rttP99Us: med((x) => x.rttP99Us),
      pipelinedMsgsPerSec: med((x) => x.pipelinedMsgsPerSec),
      deviceRssMB: med((x) => x.deviceRssMB),
    };
    results[name] = {
      ...m,
      rttP50UsPerRun: all.map((x) => x.rttP50Us),
      ...(r.note ? { note: r.note } : {}),
    };
    say(
      `${name}: round trip p50 ${m.rttP50Us} µs, p99 ${m.rttP99Us} µs; ${m.pipelinedMsgsPerSec} msg/s pipelined; device RSS ${m.deviceRssMB} MB`,
    );
  }
  const aranyaRssMB = +(Deno.memoryUsage().rss / 2 ** 20).toFixed(1);
  say(`aranya side RSS (this process, all transports loaded): ${aranyaRssMB} MB`);

  say(`idle: capturing ${IDLE_SECONDS} s of traffic on every transport at once`);
  const dir = await ensureDir(`${CACHE}/bench-link`);
  const captures = await Promise.all(
    runs.map((r) => startCapture(r.ports, `${dir}/${r.name}.pcap`)),
  );
  await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
  for (let i = 0; i < runs.length; i++) {
    const r = runs[i]!;
    const split = r.devicePorts ? await r.devicePorts() : [];
    const c = await captures[i]!.stop(split);
    let deviceBytes = c.bytes;
    let devicePackets = c.packets;
    if (split.length) {
      deviceBytes = split.reduce((n, p) => n + (c.byPort.get(p)?.bytes ?? 0), 0);
      devicePackets = split.reduce((n, p) => n + (c.byPort.get(p)?.packets ?? 0), 0);
      const shared = Math.round((c.bytes - deviceBytes) * 86400 / IDLE_SECONDS);
      results[r.name]!.sharedAranyaBytesPerDay = shared;
      say(
        `${r.name}: aranya's shared broker connection: ${
          (shared / 1024).toFixed(0)
        } KB/day for all devices together`,
      );
    }
    const perDay = Math.round(deviceBytes * 86400 / IDLE_SECONDS);
    results[r.name]!.idleBytesPerDay = perDay;
    results[r.name]!.idlePackets = devicePackets;
    say(
      `${r.name}: idle ${devicePackets} packets, ${deviceBytes} bytes in ${IDLE_SECONDS} s = ${
        (perDay / 1024).toFixed(0)
      } KB/day (${
        (2.7 * 1024 * 1024 / perDay).toFixed(1)
      }x less than KubeEdge's ~2.7 MB/day; goal 200 KB/day)`,
    );
  }
  for (const r of runs) await r.stop();
  const ws = results.websocket as { rttP50Us?: number } | undefined;
  if (ws?.rttP50Us) {
    say(
      `websocket p50 ${ws.rttP50Us} µs vs goal 100 µs: ${
        (ws.rttP50Us / 100).toFixed(2)
      }x of the goal`,
    );
  }
  console.log(JSON.stringify({
    bench: "link",
    summary: flatSummary({ ...results, aranyaRssMB }),
    machine,
    runs: RUNS,
    rttSamples: RTT_N,
    pipelined: PIPE_N,
    idleSeconds: IDLE_SECONDS,
    aranyaRssMB,
    anchors: {
      kubeedgeIdleBytesPerDay: 2.7 * 1024 * 1024,
      goalIdleBytesPerDay: 200 * 1024,
      goalWebsocketRttP50Us: 100,
    },
    transports: results,
  }));
  Deno.exit(0);
}
