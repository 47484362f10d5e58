/**
 * Many simulated devices in one Deno process, for aranya's scale bench: each
 * device dials aranya's websocket listener with arhat's real dialer
 * (arhat/connectivity/websocket/ws_link_dialer.ts) and its real token, and
 * answers on a real SessionServer (common/session/session_server.ts) with a
 * minimal handler table:
 *
 * - CMD_NODE_INFO_GET: arhat's own node handler over a plausible
 *   NodeStatusMsg (a Linux host with 4 CPUs, 8 GiB, 64 GiB of storage, 110
 *   pods, conditions from arhat's evaluateNodeConditions: Ready, no pressure);
 * - CMD_POD_LIST: an empty PodStatusListMsg (no containers run);
 * - CMD_POD_DELETE: what arhat answers for a pod it does not run, a
 *   PodStatusMsg with the uid and phase DELETED (aranya sends it when a pod
 *   bound to the node, such as the virtual pod, is deleted).
 *
 * Other kinds are answered "not supported" by the session layer, as arhat
 * does for what it cannot do; `stats()` counts every kind received, and those
 * it did not answer.
 *
 * Several aranya replicas: device number k (its `index`, else the order it
 * was added in) first dials `urls[k % urls.length]`, as a Service spreads
 * connections; a device whose dial fails or whose link closes moves on to the
 * next URL and dials it after a jittered back-off (as arhat with several
 * connectivity methods, or a Service whose dead endpoint was removed, would).
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Agent } from "@aranya/arhat/agent/agent";
import { decodePayload } from "@aranya/arhat/agent/decode";
import { nodeHandlers } from "@aranya/arhat/agent/handle_node";
import { WebSocketLinkDialer } from "@aranya/arhat/connectivity/websocket/ws_link_dialer";
import { DEFAULT_THRESHOLDS, evaluateNodeConditions } from "@aranya/arhat/node/conditions";
import { goArch } from "@aranya/arhat/node/host_parsers";
import { DEFAULT_MAX_PODS, encodeNodeStatus } from "@aranya/arhat/node/node_info";
import { Backoff, type BackoffOptions, sleep } from "@aranya/common/backoff";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { errorMessage } from "@aranya/common/errors";
import { aborted, readySignal } from "@aranya/common/lifecycle";
import type { Link } from "@aranya/common/link";
import { type Logger, nullLogger } from "@aranya/common/log";
import { type Dispatcher, SessionServer } from "@aranya/common/session/session_server";
import {
  PodDeleteCmdSchema,
  PodStatusListMsgSchema,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";

/** One simulated device. */
export interface SimDevice {
  namespace: string;
  name: string;
  /** The token from the device's credentials Secret. */
  token: string;
  /** The device's number k: it dials urls[k % urls.length] first (default: the order of `add`). */
  index?: number;
}

/** Options for {@link SimFleet}. */
export interface SimFleetOptions {
  /**
   * aranya's websocket link endpoints, one per replica, e.g.
   * ["wss://localhost:8443/v1/link"]; see the module doc for which one a device dials.
   */
  urls: string[];
  /** PEM CA that verifies aranya's serving certificate. */
  ca: string;
  /** Reconnect back-off (default 200 ms growing to 5 s). */
  backoff?: BackoffOptions;
  /** Dial timeout, ms (default 30 s). */
  dialTimeoutMs?: number;
  /** Most dials (TLS handshakes) in flight at once (default 64). */
  maxDialing?: number;
  log?: Logger;
}

/** What the fleet did so far. */
export interface SimFleetStats {
  devices: number;
  /** Links up now. */
  connected: number;
  /** Successful dials, in total. */
  connects: number;
  /** Failed dials, in total. */
  dialFailures: number;
  /** Failed dials by reason (the error's message, numbers and names masked). */
  dialFailuresByReason: Record<string, number>;
  /** Commands received, by kind name. */
  commands: Record<string, number>;
  /** Commands answered "not supported", by kind name. */
  unsupported: Record<string, number>;
  /** Links up now, per URL (same order as `urls`). */
  connectedByUrl: number[];
  /** Successful dials per URL. */
  connectsByUrl: number[];
}

const GiB = 1024n * 1024n * 1024n;
const CPU_MILLIS = 4000n;
const MEMORY = 8n * GiB;
const STORAGE = 64n * GiB;
const PID_MAX = 4_194_304n;

const minusPercent = (total: bigint, percent: number) =>
  total - (total * BigInt(percent) + 99n) / 100n;

/** A plausible node status of a simulated device (what arhat would report on a small host). */
export function simNodeStatus(device: SimDevice, kind: "all" | "dynamic"): Uint8Array {
  const resources = (r: { memory: bigint; storage: bigint; pids: bigint }) => ({
    cpuMillis: CPU_MILLIS,
    memoryBytes: r.memory,
    storageBytes: r.storage,
    pods: BigInt(DEFAULT_MAX_PODS),
    pids: r.pids,
  });
  const conditions = evaluateNodeConditions({
    memory: { ok: true, value: { total: Number(MEMORY), available: Number(MEMORY / 2n) } },
    disk: { ok: true, value: { total: Number(STORAGE), available: Number(STORAGE / 2n) } },
    pids: { ok: true, value: { max: Number(PID_MAX), used: 300 } },
  });
  const t = DEFAULT_THRESHOLDS;
  return encodeNodeStatus({
    systemInfo: kind === "dynamic" ? undefined : {
      os: "linux",
      osImage: "Debian GNU/Linux 13 (trixie)",
      arch: goArch(Deno.build.arch),
      kernelVersion: "6.12.0-sim",
      bootId: stableUuid(`${device.namespace}/${device.name}/boot`),
      machineId: stableUuid(`${device.namespace}/${device.name}`).replaceAll("-", ""),
      systemUuid: stableUuid(`${device.namespace}/${device.name}/system`),
      runtimeName: "sim",
      runtimeVersion: "0.1.0",
      agentVersion: "0.1.0-sim",
      hostname: device.name,
    },
    capacity: resources({ memory: MEMORY, storage: STORAGE, pids: PID_MAX }),
    allocatable: resources({
      memory: minusPercent(MEMORY, t.memoryAvailablePercent),
      storage: minusPercent(STORAGE, t.diskAvailablePercent),
      pids: minusPercent(PID_MAX, t.pidsAvailablePercent),
    }),
    conditions,
  });
}

/** A UUID-shaped string derived from `seed` (FNV-1a; only needs to look plausible and be stable). */
function stableUuid(seed: string): string {
  let hex = "";
  for (let round = 0; hex.length < 32; round++) {
    let h = 0x811c9dc5 ^ round;
    for (let i = 0; i < seed.length; i++) {
      h ^= seed.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    hex += h.toString(16).padStart(8, "0");
  }
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
    hex.slice(20, 32)
  }`;
}

const EMPTY_POD_LIST = toBinary(PodStatusListMsgSchema, create(PodStatusListMsgSchema, {}));

/** A counting semaphore for dials. */
class Slots {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiting.push(r));
  }
  give(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

/** N simulated devices; see the module doc. */
export class SimFleet {
  readonly #o: SimFleetOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly #pending: SimDevice[] = [];
  readonly #loops: Promise<void>[] = [];
  readonly #slots: Slots;
  readonly #commands = new Map<CmdKind, number>();
  readonly #unsupported = new Map<CmdKind, number>();
  readonly #connectedByUrl: number[];
  readonly #connectsByUrl: number[];
  #signal?: AbortSignal;
  #devices = 0;
  #connected = 0;
  #connects = 0;
  #dialFailures = 0;
  readonly #dialFailuresByReason = new Map<string, number>();

  constructor(opts: SimFleetOptions) {
    if (!opts.urls.length) throw new Error("SimFleet needs at least one URL");
    this.#o = opts;
    this.#connectedByUrl = opts.urls.map(() => 0);
    this.#connectsByUrl = opts.urls.map(() => 0);
    this.#log = opts.log ?? nullLogger;
    this.#slots = new Slots(opts.maxDialing ?? 64);
  }

  /** Resolves once `run` started. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Adds a device; it dials as soon as the fleet runs (at once if it already does). */
  add(device: SimDevice): void {
    device = { ...device, index: device.index ?? this.#devices };
    this.#devices++;
    if (this.#signal) this.#loops.push(this.#device(device, this.#signal));
    else this.#pending.push(device);
  }

  /** Counters (a snapshot). */
  stats(): SimFleetStats {
    const byName = (m: Map<CmdKind, number>) =>
      Object.fromEntries([...m].map(([k, n]) => [CmdKind[k] ?? String(k), n]));
    return {
      devices: this.#devices,
      connected: this.#connected,
      connects: this.#connects,
      dialFailures: this.#dialFailures,
      dialFailuresByReason: Object.fromEntries(this.#dialFailuresByReason),
      commands: byName(this.#commands),
      unsupported: byName(this.#unsupported),
      connectedByUrl: [...this.#connectedByUrl],
      connectsByUrl: [...this.#connectsByUrl],
    };
  }

  /** Runs every device until `signal` aborts; then closes all links and resolves. */
  async run(signal: AbortSignal): Promise<void> {
    if (this.#signal) throw new Error("SimFleet.run was called twice");
    this.#signal = signal;
    for (const d of this.#pending.splice(0)) this.#loops.push(this.#device(d, signal));
    this.#ready.resolve();
    await aborted(signal);
    // Devices added while we wait for the loops are started (and see the abort) too.
    for (let n = 0; n < this.#loops.length;) {
      const batch = this.#loops.slice(n);
      n = this.#loops.length;
      await Promise.allSettled(batch);
    }
  }

  /** The device's handler table, counting every command kind it is asked for. */
  #dispatcher(device: SimDevice): Dispatcher {
    let all: Uint8Array | undefined;
    const agent = new Agent().register(nodeHandlers((kind) => {
      if (kind === "all") return Promise.resolve(all ??= simNodeStatus(device, "all"));
      return Promise.resolve(simNodeStatus(device, "dynamic"));
    })).register([
      [CmdKind.CMD_POD_LIST, {
        unary: () =>
          Promise.resolve({ kind: MsgKind.MSG_POD_STATUS_LIST, payload: EMPTY_POD_LIST }),
      }],
      [CmdKind.CMD_POD_DELETE, {
        unary: ({ payload }) => {
          const { uid } = decodePayload(PodDeleteCmdSchema, payload);
          return Promise.resolve({
            kind: MsgKind.MSG_POD_STATUS,
            payload: toBinary(
              PodStatusMsgSchema,
              create(PodStatusMsgSchema, { uid, phase: PodStatusMsg_Phase.DELETED }),
            ),
          });
        },
      }],
    ]);
    const count = (m: Map<CmdKind, number>, k: CmdKind) => m.set(k, (m.get(k) ?? 0) + 1);
    return {
      handler: (kind) => {
        count(this.#commands, kind);
        const h = agent.handler(kind);
        if (!h) count(this.#unsupported, kind);
        return h;
      },
    };
  }

  async #device(device: SimDevice, signal: AbortSignal): Promise<void> {
    const id = `${device.namespace}/${device.name}`;
    const log = this.#log.with({ device: id });
    const urls = this.#o.urls;
    const dialers = urls.map((url) =>
      new WebSocketLinkDialer({
        url,
        device: id,
        token: device.token,
        tls: { ca: this.#o.ca },
        connectTimeoutMs: this.#o.dialTimeoutMs ?? 30_000,
      })
    );
    const dispatcher = this.#dispatcher(device);
    const backoff = new Backoff(this.#o.backoff ?? { initialMs: 200, maxMs: 5000 });
    let u = (device.index ?? 0) % urls.length;
    while (!signal.aborted) {
      let link: Link | undefined;
      let failure: unknown;
      await this.#slots.take();
      try {
        link = await dialers[u]!.dial(signal);
      } catch (err) {
        failure = err;
      } finally {
        this.#slots.give();
      }
      if (!link) {
        if (signal.aborted) break;
        this.#dialFailures++;
        const reason = errorMessage(failure).replace(/"[^"]*"/g, '"…"').replace(/\d+/g, "#")
          .slice(0, 160);
        this.#dialFailuresByReason.set(reason, (this.#dialFailuresByReason.get(reason) ?? 0) + 1);
        log.debug("dial failed", { url: urls[u], error: errorMessage(failure) });
        u = (u + 1) % urls.length;
        await pause(backoff.next(), signal);
        continue;
      }
      backoff.reset();
      this.#connects++;
      this.#connected++;
      this.#connectsByUrl[u]!++;
      this.#connectedByUrl[u]!++;
      new SessionServer(link, { dispatcher, log }).start();
      const end = await Promise.race([link.closed, aborted(signal).then(() => undefined)]);
      this.#connected--;
      this.#connectedByUrl[u]!--;
      if (!end) {
        link.close("fleet stopped");
        await link.closed;
        break;
      }
      log.debug("link closed", { url: urls[u], by: end.by, reason: end.reason });
      u = (u + 1) % urls.length;
      await pause(backoff.next(), signal);
    }
  }
}

/** Waits `ms`, or until `signal` aborts (then resolves: the caller checks the signal). */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, signal).catch(() => {});
}
