/**
 * bench:link's idle measurement, on the real thing: the real aranya process
 * (deploy/aranya's production config with this run's ports, paths and
 * namespace, its permission set, its RBAC) and one real arhat per transport as
 * shipped (shipped_arhat.ts: the bundle under its permission set), each device
 * with one pod running on Podman; mqtt through a private mosquitto (aranya's
 * account with a password; the dynamic security plugin only when asked, see
 * {@link IdleOptions.mqttDynamicSecurity}). All transports idle at once, on separate ports,
 * while tcpdump captures every frame on loopback for the window; aranya's
 * `aranya_link_messages_total` is read at both ends of the window. The bytes
 * are split by direction and kind (link_wire_kinds.ts) and extrapolated to a
 * day. MQTT counts both legs: the device's connection to the broker and
 * aranya's, divided among the broker's devices (here one).
 */
import { parse as parseYaml, parseAllDocuments, stringify as stringifyYaml } from "yaml";
import { waitAranyaReady } from "@aranya/e2e/aranya_harness";
import type { World } from "@aranya/e2e/edge_world";
import { uniqueName } from "@aranya/e2e/fixtures";
import { ROOT } from "@aranya/e2e/paths";
import { freePort, isAlive } from "@aranya/e2e/process";
import { type Broker, startMosquitto } from "@aranya/e2e/services/mosquitto";
import { rssMB } from "./bench_arhat.ts";
import type { LinkTransport } from "./link_active.ts";
import { type LinkMessages, linkMessagesDelta, readLinkMessages } from "./link_metrics.ts";
import { KEEPALIVE_SHAPES, type LinkWire, splitLinkWire } from "./link_wire_kinds.ts";
import { buildShippedArhat } from "./shipped_arhat.ts";
import { type ShippedDevice, shippedDeviceReady, startShippedDevice } from "./shipped_device.ts";
import { readPcap, startCapture } from "./wire_capture.ts";

/** Options of {@link measureIdle}. */
export interface IdleOptions {
  transports: LinkTransport[];
  /** The capture window, seconds. */
  windowSeconds: number;
  /** Quiet time after every pod runs and before the capture, seconds. */
  settleSeconds: number;
  /**
   * A keepalive for every device instead of the products' defaults (websocket
   * and gRPC: the EdgeDevice's `timers.keepaliveInterval`; MQTT: arhat's
   * `mqtt.keepaliveSeconds`), so a short window holds some.
   */
  keepaliveSeconds?: number;
  /**
   * MQTT through mosquitto's dynamic security plugin with per-device accounts,
   * as deploy/aranya/config.sample.yaml has it. Off by default: with it,
   * aranya's repeated account updates make mosquitto 2.0.11 kick the device
   * and aranya then refuses its reconnects ("already connected"), so the
   * MQTT device never stays connected (docs/link.md).
   */
  mqttDynamicSecurity?: boolean;
  /** Where the bundle, capture and logs go. */
  dir: string;
  /** Aborted when the bench runs out of time. */
  signal: AbortSignal;
  say: (line: string) => void;
}

/** Bytes per day of one direction or kind. */
export type PerDay = Record<string, number>;

/** One link's (or leg's) bytes per day, split, and what the window held. */
export interface LinkPerDay {
  bytes_per_day: number;
  device_to_aranya_bytes_per_day: number;
  aranya_to_device_bytes_per_day: number;
  device_to_aranya_by_kind: PerDay;
  aranya_to_device_by_kind: PerDay;
  packets: number;
  bytes: number;
  exchanges: Record<string, number>;
}

/** One transport's idle figures. */
export interface IdleFigures extends LinkPerDay {
  /** Session messages aranya counted in the window. */
  session_messages: { sent: Record<string, number>; received: Record<string, number> };
  /** MQTT: the two legs apart. */
  legs?: Record<"device_leg" | "aranya_leg", LinkPerDay>;
  /** MQTT: how many devices share aranya's broker connection (its leg is divided by this). */
  aranya_leg_devices?: number;
  /** arhat's RSS at the end of the window, MB. */
  arhat_rss_mb: number;
}

/** What {@link measureIdle} returns. */
export interface IdleResult {
  transports: Partial<Record<LinkTransport, IdleFigures>>;
  window_s: number;
  aranya_rss_mb: number;
  keepalive_override_s?: number;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(new Error("the bench ran out of time"));
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new Error("the bench ran out of time"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });

/**
 * aranya's production config (the ConfigMap in deploy/aranya/deployment.yaml)
 * with this run's kubeconfig, namespace, listeners on 127.0.0.1, TLS files,
 * its own leader-election Lease and a private broker.
 */
export async function productionAranyaConfig(o: {
  kubeconfig: string;
  namespace: string;
  httpPort: number;
  kubeletPort: number;
  websocketPort: number;
  grpcPort: number;
  certFile: string;
  keyFile: string;
  mqtt?: { broker: string; username: string; passwordFile: string; dynamicSecurity: boolean };
}): Promise<string> {
  const docs = parseAllDocuments(await Deno.readTextFile(`${ROOT}/deploy/aranya/deployment.yaml`))
    .map((d) => d.toJSON());
  const cm = docs.find((d) => d?.kind === "ConfigMap" && d.metadata?.name === "aranya-config");
  if (!cm?.data?.["config.yaml"]) {
    throw new Error("deploy/aranya/deployment.yaml has no ConfigMap aranya-config/config.yaml");
  }
  const c = parseYaml(cm.data["config.yaml"]);
  c.kubeconfig = o.kubeconfig;
  c.namespaces = [o.namespace];
  c.http.listen = `127.0.0.1:${o.httpPort}`;
  c.membership.name = uniqueName("aranya-linkbench");
  c.kubelet = { ...c.kubelet, address: "127.0.0.1", listen: "127.0.0.1", port: o.kubeletPort };
  c.kubelet.portCount = 4;
  const tls = { certFile: o.certFile, keyFile: o.keyFile };
  c.links.websocket = { ...c.links.websocket, listen: `127.0.0.1:${o.websocketPort}`, tls };
  c.links.grpc = { ...c.links.grpc, listen: `127.0.0.1:${o.grpcPort}`, tls };
  if (o.mqtt) {
    c.links.mqtt = {
      broker: o.mqtt.broker,
      username: o.mqtt.username,
      passwordFile: o.mqtt.passwordFile,
      dynamicSecurity: o.mqtt.dynamicSecurity,
    };
  }
  return stringifyYaml(c);
}

/** Client ports of the broker's clients whose id starts with `prefix`, from mosquitto's log. */
async function brokerClientPorts(broker: Broker, prefix: string): Promise<number[]> {
  const log = await Deno.readTextFile(broker.logFile);
  return [...log.matchAll(/New client connected from 127\.0\.0\.1:(\d+) as (\S+)/g)]
    .filter((m) => m[2]!.startsWith(prefix)).map((m) => Number(m[1]));
}

/** Scales a window's link split to a day. */
function perDay(w: LinkWire, factor: number, divide = 1): LinkPerDay {
  const side = (s: LinkWire["device_to_aranya"]) =>
    Object.fromEntries(
      Object.entries(s).map(([k, v]) => [k, Math.round(v.bytes * factor / divide)]),
    );
  const d2a = side(w.device_to_aranya);
  const a2d = side(w.aranya_to_device);
  const sum = (x: PerDay) => Object.values(x).reduce((a, b) => a + b, 0);
  return {
    bytes_per_day: sum(d2a) + sum(a2d),
    device_to_aranya_bytes_per_day: sum(d2a),
    aranya_to_device_bytes_per_day: sum(a2d),
    device_to_aranya_by_kind: d2a,
    aranya_to_device_by_kind: a2d,
    packets: w.packets,
    bytes: w.bytes,
    exchanges: w.exchanges,
  };
}

/** Adds two per-day splits (MQTT's legs). */
function addPerDay(a: LinkPerDay, b: LinkPerDay): LinkPerDay {
  const merge = (x: PerDay, y: PerDay) => {
    const out = { ...x };
    for (const [k, v] of Object.entries(y)) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  return {
    bytes_per_day: a.bytes_per_day + b.bytes_per_day,
    device_to_aranya_bytes_per_day: a.device_to_aranya_bytes_per_day +
      b.device_to_aranya_bytes_per_day,
    aranya_to_device_bytes_per_day: a.aranya_to_device_bytes_per_day +
      b.aranya_to_device_bytes_per_day,
    device_to_aranya_by_kind: merge(a.device_to_aranya_by_kind, b.device_to_aranya_by_kind),
    aranya_to_device_by_kind: merge(a.aranya_to_device_by_kind, b.aranya_to_device_by_kind),
    packets: a.packets + b.packets,
    bytes: a.bytes + b.bytes,
    exchanges: merge(a.exchanges, b.exchanges),
  };
}

/** Runs the idle measurement in `w` (see the module doc); stops what it started. */
export async function measureIdle(w: World, o: IdleOptions): Promise<IdleResult> {
  const say = o.say;
  const undo: (() => Promise<unknown>)[] = [];
  try {
    const t0 = performance.now();
    const bundle = await buildShippedArhat(`${o.dir}/arhat-bundle`);
    say(`arhat bundled in ${((performance.now() - t0) / 1000).toFixed(1)} s (${bundle.dir})`);

    const httpPort = freePort();
    const websocketPort = freePort();
    const grpcPort = freePort();
    let broker: Broker | undefined;
    let mqtt:
      | { broker: string; username: string; passwordFile: string; dynamicSecurity: boolean }
      | undefined;
    if (o.transports.includes("mqtt")) {
      const adminPassword = crypto.randomUUID();
      broker = await startMosquitto(
        o.mqttDynamicSecurity ? { dynamicSecurity: { adminUser: "aranya", adminPassword } } : {},
      );
      const b = broker;
      undo.push(async () => {
        await b.stop();
        await Deno.copyFile(b.logFile, `${o.dir}/mosquitto.log`).catch(() => {});
        await Deno.remove(`${ROOT}/.cache/${b.instance}`, { recursive: true }).catch(() => {});
      });
      const passwordFile = `${w.dir}/mqtt-password`;
      await Deno.writeTextFile(passwordFile, adminPassword, { mode: 0o600 });
      mqtt = {
        broker: `mqtt://${broker.address}`,
        username: "aranya",
        passwordFile,
        dynamicSecurity: o.mqttDynamicSecurity ?? false,
      };
    }
    const aranya = await w.startAranya(
      await productionAranyaConfig({
        kubeconfig: w.kubeconfig,
        namespace: w.ns,
        httpPort,
        kubeletPort: freePort(),
        websocketPort,
        grpcPort,
        certFile: `${w.dir}/tls.crt`,
        keyFile: `${w.dir}/tls.key`,
        mqtt,
      }),
    );
    await waitAranyaReady(aranya, httpPort);
    say(
      `aranya ready (pid ${aranya.pid}; websocket :${websocketPort}, grpc :${grpcPort}${
        broker ? `, broker ${broker.address}` : ""
      })`,
    );

    // One EdgeDevice and one shipped arhat per transport.
    const devices: ShippedDevice[] = [];
    undo.push(async () => {
      // The namespace goes while aranya and the devices still run, so they stop the pods and
      // remove the finalizers; then the devices stop (World.close stops aranya).
      await w.cluster.kubectl(["delete", "namespace", w.ns, "--ignore-not-found", "--wait=false"]);
      await w.cluster.kubectl(["wait", "--for=delete", `namespace/${w.ns}`, "--timeout=30s"]);
      await Promise.allSettled(devices.map((d) => d.proc.stop()));
      for (const d of devices) {
        await Deno.copyFile(d.proc.logFile, `${o.dir}/arhat-${d.transport}.log`).catch(() => {});
        await Deno.remove(d.dir, { recursive: true }).catch(() => {});
      }
    });
    for (const transport of o.transports) {
      devices.push(
        await startShippedDevice(w, bundle, {
          transport,
          name: uniqueName(`idle-${transport}`),
          websocketPort,
          grpcPort,
          broker,
          keepaliveSeconds: o.keepaliveSeconds,
        }),
      );
    }
    for (const d of devices) await shippedDeviceReady(w, d);
    say(`${devices.length} devices Ready; one pod on each`);
    for (const d of devices) {
      await w.kubectl(
        ["apply", "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: `idle-${d.transport}`, labels: { app: `idle-${d.transport}` } },
          spec: {
            nodeSelector: { "arhat.dev/name": d.name },
            tolerations: [{ key: "arhat.dev/namespace", operator: "Exists", effect: "NoSchedule" }],
            terminationGracePeriodSeconds: 2,
            containers: [{
              name: "app",
              image: w.services.endpoints.testImage,
              imagePullPolicy: "IfNotPresent",
              command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
            }],
          },
        }),
      );
    }
    for (const d of devices) await w.runningPod(`app=idle-${d.transport}`, 120_000);
    say(`pods Running; settling for ${o.settleSeconds} s`);
    await sleep(o.settleSeconds * 1000, o.signal);

    const capture = await startCapture(
      [websocketPort, grpcPort, ...(broker ? [Number(broker.address.split(":")[1])] : [])],
      `${o.dir}/idle.pcap`,
    );
    undo.push(() => capture.stop());
    const before: LinkMessages = await readLinkMessages(httpPort);
    say(`capturing ${o.windowSeconds} s of idle on ${devices.length} links`);
    const started = Date.now();
    const every = Math.max(60, Math.round(o.windowSeconds / 6)) * 1000;
    while (Date.now() - started < o.windowSeconds * 1000) {
      await sleep(Math.min(every, o.windowSeconds * 1000 - (Date.now() - started)), o.signal);
      for (const d of devices) {
        if (!isAlive(d.proc.pid)) throw new Error(`${d.transport}: arhat exited during the window`);
      }
      const left = Math.max(0, o.windowSeconds - (Date.now() - started) / 1000);
      if (left > 0) say(`${Math.round(left)} s of the window left`);
    }
    const window = (Date.now() - started) / 1000;
    const after = await readLinkMessages(httpPort);
    const arhatRss = new Map<LinkTransport, number>();
    for (const d of devices) arhatRss.set(d.transport, await rssMB(d.proc.pid));
    const aranyaRss = await rssMB(aranya.pid);
    await capture.stop();
    const packets = readPcap(await Deno.readFile(capture.file));
    say(`captured ${packets.length} packets in ${window.toFixed(0)} s (${capture.file})`);

    const factor = 86400 / window;
    const out: IdleResult = {
      transports: {},
      window_s: Math.round(window),
      aranya_rss_mb: aranyaRss,
      ...(o.keepaliveSeconds ? { keepalive_override_s: o.keepaliveSeconds } : {}),
    };
    for (const d of devices) {
      const sessionKinds = linkMessagesDelta(before, after, d.transport);
      const reconnects = sessionKinds.sent["CMD_NODE_INFO_GET"] ?? 0;
      if (reconnects) say(`${d.transport}: the device reconnected during the window`);
      const common = { packets, isKeepalive: KEEPALIVE_SHAPES[d.transport], sessionKinds };
      let fig: Omit<IdleFigures, "session_messages" | "arhat_rss_mb">;
      if (d.transport === "mqtt") {
        const devicePorts = await brokerClientPorts(broker!, "arhat-");
        const aranyaPorts = await brokerClientPorts(broker!, "aranya-");
        const brokerPort = Number(broker!.address.split(":")[1]);
        const sharing = devices.filter((x) => x.transport === "mqtt").length;
        const deviceLeg = perDay(
          splitLinkWire({ ...common, aranyaPorts: [brokerPort], devicePorts }),
          factor,
        );
        const aranyaLeg = perDay(
          splitLinkWire({
            ...common,
            aranyaPorts: [brokerPort],
            devicePorts: aranyaPorts,
            reversed: true,
          }),
          factor,
          sharing,
        );
        fig = {
          ...addPerDay(deviceLeg, aranyaLeg),
          legs: { device_leg: deviceLeg, aranya_leg: aranyaLeg },
          aranya_leg_devices: sharing,
        };
      } else {
        const port = d.transport === "websocket" ? websocketPort : grpcPort;
        fig = perDay(splitLinkWire({ ...common, aranyaPorts: [port] }), factor);
      }
      out.transports[d.transport] = {
        ...fig,
        session_messages: sessionKinds,
        arhat_rss_mb: arhatRss.get(d.transport)!,
      };
      say(
        `${d.transport}: ${fig.packets} packets, ${fig.bytes} bytes in ${window.toFixed(0)} s = ${
          (fig.bytes_per_day / 1024).toFixed(1)
        } KB/day (device->aranya ${JSON.stringify(fig.device_to_aranya_by_kind)}, aranya->device ${
          JSON.stringify(fig.aranya_to_device_by_kind)
        } bytes/day)`,
      );
    }
    return out;
  } finally {
    for (const f of undo.reverse()) await f().catch((e) => say(`cleaning up: ${e}`));
  }
}
