/**
 * The MQTT transport, aranya side: ONE client connection to the broker serves
 * every device that uses that broker, and hands out one {@link Link} per
 * accepted device connection. The broker is not trusted: everything that
 * matters is authenticated and encrypted end to end (common/mqtt_seal.ts),
 * and the device's token is never published.
 *
 * Topics, all QoS 1, under each device's message namespace `ns`:
 * - `{ns}/status` (device -> aranya): sid-0 `MSG_STATE` frames
 *   (`stateFrame` in common/envelope.ts). `ONLINE` carries the device name, a
 *   random connection id, the device's nonce and a MAC proving it holds its
 *   link key; `OFFLINE` carries the connection id and its MAC, and is also
 *   the device's MQTT will. An `OFFLINE` whose MAC does not verify is ignored.
 * - `{ns}/cmd` (aranya -> device): first the answer to an `ONLINE`, then the
 *   link's sealed `Cmd` frames. The answer is either
 *   - the acceptance: a sid-0 `Cmd` of kind `CMD_UNSPECIFIED`, `complete`
 *     true, whose payload is an `MqttAccept` (the connection id, aranya's
 *     nonce and a MAC proving aranya holds the key), published before any
 *     frame of the link; or
 *   - a sid-0 `CMD_REJECT` naming the connection id (`rejectFrame`, not
 *     sealed: aranya may not know a key for it): `UNAUTHENTICATED` (a proof
 *     that does not verify, or a device announcing itself under another
 *     device's namespace) or `ALREADY_CONNECTED` (the device has a live link
 *     already, on any transport). A forged rejection can only make a device
 *     dial again.
 *   Once linked, aranya closing the link is a sealed sid-0 `CMD_REJECT`.
 * - `{ns}/msg` (device -> aranya): the link's sealed `Msg` frames. A frame
 *   that does not open with the live link's key (forged, replayed, another
 *   connection's) is dropped; nothing reaches the session layer unless the
 *   device sent it on this connection.
 *
 * When a link ends: the device's `OFFLINE` (sent on close, and its will when
 * the broker ends its session: a lost connection, a keepalive timeout, a
 * session taken over). The broker does not always say so: mosquitto
 * disconnects a client "by administrative action" (its dynamic security
 * account changed or was disabled) without publishing its will. So a link is
 * never held against its own device: when a new connection of the device
 * proves its key while aranya holds a link, aranya first probes the old
 * connection (`MqttServerLink.probe`: a sealed command of no kind on a probe
 * sid, which the device's session server answers with `MSG_ERROR`, within
 * `probeTimeoutMs`). An answer means a second agent: it is refused
 * (`ALREADY_CONNECTED`). No answer means the old connection is gone: that
 * link closes (`by: "error"`, with a sealed `CMD_REJECT` in case it was alive
 * after all) and the new one is accepted. And when aranya itself changes a
 * device's broker account, which makes mosquitto disconnect it, it closes that
 * device's link at once.
 *
 * Who may publish or subscribe on a namespace's topics at all is for the
 * broker's ACLs: with `dynamicSecurity` aranya manages one broker client per
 * device (user name "<namespace>/<name>", the password derived from its link
 * key) and a role that allows it only its own topics (dynamic_security.ts),
 * level-triggered: every `addDevice` compares the account with what it should
 * be and changes only what differs. The link's security does not depend on it.
 *
 * Frame sizes: a frame larger than `maxFrameSize` on `{ns}/msg` closes that
 * link (`BaseLink.deliver`); aranya asks the broker (MQTT 5 Maximum Packet
 * Size) for no packet above twice a sealed maximum frame plus headers, so a
 * moderately oversized frame still arrives and closes its link, and a huge one
 * is dropped by the broker.
 *
 * aranya's own session is persistent (`clean` false, `sessionExpirySeconds`),
 * so subscriptions and announcements survive a short outage. When its broker
 * connection drops anyway (for example, a broker restart), every link closes
 * with `by: "error"` (or `"remote"`, if the broker delivered the device's will
 * first), and the `CMD_REJECT`s telling the devices go out once aranya is back;
 * the client reconnects on its own, subscribes every device again, and devices
 * dial again and announce themselves anew. `connected` is true once that
 * resubscription is done.
 *
 * @module
 */
import { setTcpNoDelay } from "@aranya/common/tcp_nodelay";
import { Buffer } from "node:buffer";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { type Deferred, deferred } from "@aranya/common/deferred";
import {
  CmdKind,
  decodeMsg,
  decodeState,
  encodeCmd,
  MsgKind,
  rejectFrame,
  StateKind,
} from "@aranya/common/envelope";
import {
  AlreadyExistsError,
  CanceledError,
  errorMessage,
  ForbiddenError,
  InvalidInputError,
  ProtocolError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { DeviceKeyring, Link, LinkRegistry, LinkServer } from "@aranya/common/link";
import { BaseLink } from "@aranya/common/link_base";
import { aborted, readySignal } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";
import {
  DYNSEC_RESPONSE_TOPIC,
  DynsecClient,
  ensureDeviceAccount,
  removeDeviceAccount,
} from "./dynamic_security.ts";
import {
  acceptMac,
  brokerPassword,
  FrameOpener,
  FrameSealer,
  macEqual,
  newNonce,
  offlineMac,
  onlineMac,
  SEAL_OVERHEAD,
  sessionKeys,
} from "@aranya/common/mqtt_seal";
import {
  acceptFrame,
  asBuffer,
  endMqttClient,
  MQTT_DEFAULT_MAX_FRAME_SIZE,
  MQTT_TRANSPORT,
  mqttTopics,
  publishQos1,
  validateMessageNamespace,
} from "@aranya/common/mqtt_protocol";

export { MQTT_DEFAULT_MAX_FRAME_SIZE, MQTT_TRANSPORT, mqttTopics, validateMessageNamespace };

/** Options of {@link MqttLinkServer}. */
export interface MqttLinkServerOptions {
  /** Broker URL: `mqtt://host:port` or `mqtts://host:port`. */
  url: string;
  /** PEM CA bundle that verifies the broker's certificate (mqtts). */
  ca?: string | Uint8Array;
  /** PEM client certificate (mqtts with client authentication). */
  cert?: string | Uint8Array;
  /** PEM private key of `cert`. */
  key?: string | Uint8Array;
  /** TLS server name to verify, when it differs from the URL's host. */
  servername?: string;
  /** MQTT client id; default "aranya-<random>". */
  clientId?: string;
  username?: string;
  password?: string;
  /** The devices' link keys (from their credentials; never sent). */
  keys: DeviceKeyring;
  /**
   * Manage one broker client and role per device through mosquitto's dynamic
   * security plugin (dynamic_security.ts); aranya's account must be allowed
   * its control topic. Default false.
   */
  dynamicSecurity?: boolean;
  /** Where accepted links are claimed; a refused claim rejects the connection. */
  registry: LinkRegistry;
  /** Largest frame either way (default {@link MQTT_DEFAULT_MAX_FRAME_SIZE}). */
  maxFrameSize?: number;
  /**
   * MQTT keepalive of aranya's own broker connection, whole seconds, 1..65535
   * (default {@link MQTT_SERVER_DEFAULT_KEEPALIVE_SECONDS}).
   */
  keepaliveSeconds?: number;
  /**
   * How long a device's connection has to answer a liveness probe when another
   * connection of the device announces itself, ms (default 5000; see the
   * module doc).
   */
  probeTimeoutMs?: number;
  /** Delay between reconnect attempts to the broker, ms (default 1000). */
  reconnectPeriodMs?: number;
  /** How long the broker keeps aranya's session while it is away, seconds (default 300). */
  sessionExpirySeconds?: number;
  /** Timeout of one connection attempt, ms (default 10000). */
  connectTimeoutMs?: number;
  log?: Logger;
}

/**
 * Default MQTT keepalive of aranya's own broker connection, seconds. That
 * connection usually stays inside the cluster: no NAT, no load balancer, so
 * the keepalive only has to stay under what sits in between there and what
 * brokers accept: kube-proxy's IPVS mode forgets an idle TCP connection after
 * 900 s (iptables mode: conntrack's 24 h, Cilium: 6 h), AWS IoT Core accepts
 * at most 1200 s, mosquitto 65535 s; a broker outside the cluster behind an
 * AWS NLB (350 s idle timeout) still works. It costs about 60 KB/day for the
 * whole broker connection (at the former 30 s: about 600 KB/day). A broker
 * that restarts or closes the connection is noticed at once; only a silently
 * dead connection (a partition) takes up to two keepalives, 10 minutes, to
 * notice. Behind something shorter (Azure Load Balancer: 4 minutes), set
 * `links.mqtt.keepalive` lower. See docs/link.md.
 */
export const MQTT_SERVER_DEFAULT_KEEPALIVE_SECONDS = 300;

/** Default of {@link MqttLinkServerOptions.probeTimeoutMs}: well inside a device's dial timeout (15 s). */
const DEFAULT_PROBE_TIMEOUT_MS = 5_000;

/** Status messages one device may have waiting; more are dropped. */
const STATUS_QUEUE_LIMIT = 16;

/** A device that uses this broker. */
interface DeviceEntry {
  readonly device: string;
  readonly ns: string;
  readonly topics: { cmd: string; msg: string; status: string };
  /** The device's accepted connection, if any. */
  live?: MqttServerLink;
  /** Serializes the handling of `{ns}/status` messages. */
  queue: Promise<void>;
  /** Status messages waiting in `queue` (a flood beyond the bound is dropped). */
  waiting: number;
  /** Settles when the broker first acknowledged this entry's subscriptions. */
  subscribed: Deferred<void>;
  /** With dynamic security: an account reconcile is running. */
  accountRunning: boolean;
  /** With dynamic security: run the account reconcile again once the running one ends. */
  accountAgain: boolean;
}

/** aranya side of the MQTT transport; see the module doc for the protocol. */
export class MqttLinkServer implements LinkServer {
  readonly transport = MQTT_TRANSPORT;
  /** The largest frame either way. */
  readonly maxFrameSize: number;
  /** aranya's MQTT client id. */
  readonly clientId: string;

  readonly #opts: MqttLinkServerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly #byDevice = new Map<string, DeviceEntry>();
  readonly #byNamespace = new Map<string, DeviceEntry>();
  #client?: MqttClient;
  #onLink?: (link: Link) => void;
  #running = false;
  #stopped = false;
  #connected = false;
  #connectedOnce = false;
  /** Incremented on every connect and disconnect; stale work compares it. */
  #epoch = 0;
  /** The epoch whose resubscription of all devices completed. */
  #subscribedEpoch = -1;
  /** Dynamic security requests, when enabled. */
  readonly #dynsec?: DynsecClient;

  /** Validates options; does no I/O. */
  constructor(opts: MqttLinkServerOptions) {
    this.#opts = opts;
    this.maxFrameSize = opts.maxFrameSize ?? MQTT_DEFAULT_MAX_FRAME_SIZE;
    if (!Number.isInteger(this.maxFrameSize) || this.maxFrameSize < 64) {
      throw new InvalidInputError(`Invalid maxFrameSize ${opts.maxFrameSize}`);
    }
    if (!/^mqtts?:\/\//.test(opts.url)) {
      throw new InvalidInputError(
        `Broker URL "${opts.url}" must start with "mqtt://" or "mqtts://"`,
      );
    }
    const keepalive = opts.keepaliveSeconds;
    if (
      keepalive !== undefined &&
      (!Number.isInteger(keepalive) || keepalive < 1 || keepalive > 65535)
    ) {
      throw new InvalidInputError(
        `Keepalive of ${keepalive} seconds is not a whole number of seconds in 1..65535`,
      );
    }
    const probe = opts.probeTimeoutMs;
    if (probe !== undefined && (!Number.isFinite(probe) || probe <= 0)) {
      throw new InvalidInputError(`Probe timeout of ${probe} ms is not a positive number`);
    }
    this.clientId = opts.clientId ?? `aranya-${crypto.randomUUID().slice(0, 8)}`;
    if (opts.dynamicSecurity) this.#dynsec = new DynsecClient(() => this.#client, opts.log);
    this.#log = (opts.log ?? nullLogger).with({
      transport: MQTT_TRANSPORT,
      clientId: this.clientId,
    });
  }

  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /**
   * True while aranya's client is connected to the broker and subscribed to
   * every registered device's topics.
   */
  get connected(): boolean {
    return this.#connected && this.#subscribedEpoch === this.#epoch;
  }

  /** The devices that use this broker, with their message namespaces. */
  get devices(): ReadonlyMap<string, string> {
    return new Map([...this.#byDevice].map(([d, e]) => [d, e.ns]));
  }

  /**
   * Declares that `device` ("ns/name") talks through this broker under
   * `messageNamespace`, and subscribes its `msg` and `status` topics on the
   * server's one connection. Idempotent; a new namespace for the device
   * replaces the old one (closing its live link). Resolves once the broker
   * acknowledged the subscriptions (after the server connected, if it is not
   * yet); rejects with `CanceledError` when the device is removed or the server
   * stops first, `ForbiddenError` when the broker refuses the subscription,
   * `InvalidInputError` for a bad name, and `AlreadyExistsError` when another
   * device uses the namespace.
   */
  addDevice(device: string, messageNamespace: string): Promise<void> {
    if (!/^[^/]+\/[^/]+$/.test(device)) {
      return Promise.reject(
        new InvalidInputError(`Device "${device}" is not of the form "<namespace>/<name>"`),
      );
    }
    try {
      validateMessageNamespace(messageNamespace);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#stopped) {
      return Promise.reject(new CanceledError(`MQTT link server "${this.clientId}" has stopped`));
    }
    const existing = this.#byDevice.get(device);
    if (existing?.ns === messageNamespace) {
      void this.#syncAccount(existing);
      return existing.subscribed.promise;
    }
    const owner = this.#byNamespace.get(messageNamespace);
    if (owner) {
      return Promise.reject(
        new AlreadyExistsError(
          `Message namespace "${messageNamespace}" is already used by device "${owner.device}"`,
        ),
      );
    }
    if (existing) this.removeDevice(device);
    const entry: DeviceEntry = {
      device,
      ns: messageNamespace,
      topics: mqttTopics(messageNamespace),
      queue: Promise.resolve(),
      waiting: 0,
      subscribed: deferred<void>(),
      accountRunning: false,
      accountAgain: false,
    };
    entry.subscribed.promise.catch(() => {});
    this.#byDevice.set(device, entry);
    this.#byNamespace.set(messageNamespace, entry);
    if (this.#connected) this.#subscribe([entry]);
    void this.#syncAccount(entry);
    return entry.subscribed.promise;
  }

  /**
   * With dynamic security: brings the device's broker account in line with its
   * link key and namespace. Level-triggered: every `addDevice` (aranya calls it
   * on every reconcile of the EdgeDevice) compares the account with what it
   * should be and changes only what differs (`ensureDeviceAccount`), so a
   * connected device is never disconnected by a reconcile; calls while one runs
   * coalesce into one more run. A change the broker enforces by disconnecting
   * the device (without its will) closes the device's live link here, so that
   * its reconnect is accepted. Failures are logged and retried on the next
   * call. Never rejects.
   */
  async #syncAccount(entry: DeviceEntry): Promise<void> {
    if (!this.#dynsec) return;
    if (entry.accountRunning) {
      entry.accountAgain = true;
      return;
    }
    entry.accountRunning = true;
    try {
      do {
        entry.accountAgain = false;
        await this.#reconcileAccount(entry, this.#dynsec);
      } while (entry.accountAgain && this.#byDevice.get(entry.device) === entry && !this.#stopped);
    } finally {
      entry.accountRunning = false;
    }
  }

  async #reconcileAccount(entry: DeviceEntry, dynsec: DynsecClient): Promise<void> {
    const current = () => this.#byDevice.get(entry.device) === entry && !this.#stopped;
    try {
      await entry.subscribed.promise; // connected, and the response topic subscribed
      const key = await this.#opts.keys.linkKey(entry.device);
      if (!key) throw new UnavailableError("its credentials are not known yet");
      if (!current()) return;
      // A link accepted before the change is one the broker disconnects for it.
      const before = entry.live;
      const change = await ensureDeviceAccount(dynsec, entry.device, entry.ns, brokerPassword(key));
      if (change === "created") {
        this.#log.info("device's broker account set up", { device: entry.device });
      } else if (change === "updated") {
        this.#log.info("device's broker account updated; the broker disconnected the device", {
          device: entry.device,
        });
        if (before && entry.live === before) {
          before.lost("The broker disconnected the device: its broker account changed");
          this.#opts.registry.release(before);
        }
      }
    } catch (err) {
      if (current() && !(err instanceof CanceledError)) {
        this.#log.warn(
          "setting up the device's broker account failed; retried on its next change",
          {
            device: entry.device,
            error: errorMessage(err),
          },
        );
      }
    }
  }

  /**
   * Forgets `device`: unsubscribes its topics and closes its live link.
   * Idempotent.
   */
  removeDevice(device: string): void {
    const entry = this.#byDevice.get(device);
    if (!entry) return;
    this.#byDevice.delete(device);
    this.#byNamespace.delete(entry.ns);
    entry.subscribed.reject(new CanceledError(`Device "${device}" was removed`));
    entry.live?.close("device removed from the MQTT link server");
    if (this.#dynsec) {
      removeDeviceAccount(this.#dynsec, device).catch((err) =>
        this.#log.warn("removing the device's broker account failed", {
          device,
          error: errorMessage(err),
        })
      );
    }
    const client = this.#client;
    if (client && this.#connected) {
      client.unsubscribe([entry.topics.msg, entry.topics.status], (err) => {
        if (err) {
          this.#log.warn("unsubscribe failed", { device, error: errorMessage(err) });
        }
      });
    }
  }

  /**
   * Connects to the broker and serves until `signal` aborts; then closes every
   * link (telling each device with a `CMD_REJECT`) and disconnects. Broker
   * outages are retried forever. Rejects when the URL is unusable or when the
   * broker refuses aranya's credentials on the first connection.
   */
  async run(signal: AbortSignal, onLink: (link: Link) => void): Promise<void> {
    if (this.#running) throw new Error("MqttLinkServer.run was called twice");
    this.#running = true;
    this.#onLink = onLink;
    const fatal = deferred<never>();
    fatal.promise.catch(() => {});
    let client: MqttClient;
    try {
      client = mqtt.connect(this.#opts.url, this.#clientOptions());
    } catch (err) {
      const e = new InvalidInputError(
        `Cannot connect to broker "${this.#opts.url}": ${errorMessage(err)}`,
      );
      this.#ready.reject(e);
      this.#stop();
      throw e;
    }
    this.#client = client;
    client.on("connect", () => {
      setTcpNoDelay(client);
      this.#onConnect(client);
    });
    client.on("close", () => this.#onDisconnect());
    client.on("message", (topic, payload) => this.#onMessage(topic, payload));
    client.on("error", (err) => {
      const code = (err as { code?: unknown }).code;
      const refused = code === 4 || code === 5 || code === 0x86 || code === 0x87;
      if (refused && !this.#connectedOnce) {
        fatal.reject(
          new UnauthenticatedError(
            `Broker "${this.#opts.url}" refused client "${this.clientId}": ${err.message}`,
          ),
        );
        return;
      }
      // While disconnected every reconnect attempt fails the same way: keep that quiet.
      if (this.#connected) this.#log.warn("MQTT client error", { error: err.message, code });
      else this.#log.debug("MQTT client error", { error: err.message, code });
    });
    try {
      await Promise.race([aborted(signal), fatal.promise]);
    } catch (err) {
      this.#ready.reject(err);
      throw err;
    } finally {
      this.#stop();
      this.#ready.reject(new CanceledError(`MQTT link server "${this.clientId}" stopped`));
      for (const entry of this.#byDevice.values()) {
        entry.live?.close("aranya is shutting down");
      }
      await endMqttClient(client);
      this.#connected = false;
      this.#log.info("MQTT link server stopped");
    }
  }

  #clientOptions(): IClientOptions {
    const o = this.#opts;
    const buf = (v: string | Uint8Array | undefined) =>
      v === undefined ? undefined : typeof v === "string" ? v : asBuffer(v);
    return {
      clientId: this.clientId,
      username: o.username,
      password: o.password,
      protocolVersion: 5,
      clean: false,
      keepalive: o.keepaliveSeconds ?? MQTT_SERVER_DEFAULT_KEEPALIVE_SECONDS,
      // The broker drops packets above twice a sealed maximum frame (and headers) instead of
      // sending them: a frame up to that size still arrives and closes its link as too large.
      properties: {
        sessionExpiryInterval: o.sessionExpirySeconds ?? 300,
        maximumPacketSize: 2 * (this.maxFrameSize + SEAL_OVERHEAD) + 4096,
      },
      reconnectPeriod: o.reconnectPeriodMs ?? 1_000,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      reconnectOnConnackError: true,
      // Subscriptions are restored by #onConnect, for every device at once.
      resubscribe: false,
      ca: buf(o.ca),
      cert: buf(o.cert),
      key: buf(o.key),
      servername: o.servername,
    };
  }

  #stop(): void {
    this.#stopped = true;
    for (const entry of this.#byDevice.values()) {
      entry.subscribed.reject(new CanceledError(`MQTT link server "${this.clientId}" stopped`));
    }
  }

  #onConnect(client: MqttClient): void {
    if (this.#stopped) return;
    this.#connected = true;
    this.#epoch++;
    this.#log.info("connected to the MQTT broker", { url: this.#opts.url });
    const epoch = this.#epoch;
    const entries = [...this.#byDevice.values()];
    const done = entries.length ? this.#subscribe(entries) : Promise.resolve(true);
    done.then((completed) => {
      if (!completed || epoch !== this.#epoch || !client.connected) return;
      this.#subscribedEpoch = epoch;
      if (!this.#connectedOnce) {
        this.#connectedOnce = true;
        this.#ready.resolve();
      }
    });
  }

  /**
   * Subscribes the entries' topics and settles their `subscribed`; resolves
   * false when the connection dropped before the broker answered.
   */
  async #subscribe(entries: DeviceEntry[]): Promise<boolean> {
    const client = this.#client;
    if (!client) return false;
    let completed = true;
    if (this.#dynsec) {
      try {
        await client.subscribeAsync(DYNSEC_RESPONSE_TOPIC, { qos: 1 });
      } catch (err) {
        this.#log.debug("subscribe failed", { error: errorMessage(err) });
        return false;
      }
    }
    // One SUBSCRIBE packet per batch, whatever the number of devices.
    for (let i = 0; i < entries.length; i += 200) {
      const batch = entries.slice(i, i + 200);
      const topics = batch.flatMap((e) => [e.topics.msg, e.topics.status]);
      try {
        const granted = await client.subscribeAsync(topics, { qos: 1 });
        const refused = new Set(granted.filter((g) => g.qos >= 0x80).map((g) => g.topic));
        for (const e of batch) {
          if (refused.has(e.topics.msg) || refused.has(e.topics.status)) {
            e.subscribed.reject(
              new ForbiddenError(
                `Broker "${this.#opts.url}" refused the subscription to "${e.topics.msg}" or "${e.topics.status}"`,
              ),
            );
          } else {
            e.subscribed.resolve();
          }
        }
      } catch (err) {
        // The connection dropped; #onConnect subscribes again.
        this.#log.debug("subscribe failed", { error: errorMessage(err) });
        completed = false;
      }
    }
    return completed;
  }

  #onDisconnect(): void {
    if (!this.#connected) return;
    this.#connected = false;
    this.#epoch++;
    if (!this.#stopped) this.#log.warn("lost the connection to the MQTT broker; reconnecting");
    for (const entry of this.#byDevice.values()) {
      entry.live?.lost("aranya lost its connection to the MQTT broker");
    }
  }

  #onMessage(topic: string, payload: Buffer): void {
    if (topic === DYNSEC_RESPONSE_TOPIC) {
      this.#dynsec?.onResponse(payload);
      return;
    }
    const slash = topic.lastIndexOf("/");
    const entry = this.#byNamespace.get(topic.slice(0, slash));
    if (!entry) return;
    const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
    if (topic === entry.topics.msg) {
      // Only an accepted connection's frames reach a link; anything else is dropped.
      entry.live?.receive(bytes);
    } else if (topic === entry.topics.status) {
      // Bounded: a flood of announcements on one namespace cannot queue without limit.
      if (entry.waiting >= STATUS_QUEUE_LIMIT) {
        this.#log.debug("dropping a status message: too many waiting", { device: entry.device });
        return;
      }
      const epoch = this.#epoch;
      const copy = bytes.slice(); // handled later, after earlier status messages
      entry.waiting++;
      entry.queue = entry.queue
        .then(() => this.#onStatus(entry, copy, epoch))
        .finally(() => entry.waiting--)
        .catch((err) =>
          this.#log.error("handling a status message failed", {
            device: entry.device,
            error: errorMessage(err),
          })
        );
    }
  }

  async #onStatus(entry: DeviceEntry, bytes: Uint8Array, epoch: number): Promise<void> {
    let state;
    try {
      const msg = decodeMsg(bytes);
      if (msg.kind !== MsgKind.MSG_STATE || msg.sid !== 0n) {
        throw new ProtocolError(
          `Expected a sid-0 MSG_STATE on "${entry.topics.status}", got kind ${msg.kind} on sid ${msg.sid}`,
        );
      }
      state = decodeState(msg.payload);
    } catch (err) {
      this.#log.warn("ignoring a malformed status message", {
        device: entry.device,
        bytes: bytes.byteLength,
        error: errorMessage(err),
      });
      return;
    }
    const connectionId = state.connectionId;
    const log = this.#log.with({ device: entry.device, connectionId });
    if (state.kind === StateKind.OFFLINE) {
      const live = entry.live;
      if (live && live.connectionId === connectionId) {
        if (!macEqual(state.mac ?? new Uint8Array(), live.offlineMac)) {
          log.warn("ignoring an OFFLINE whose proof does not verify");
          return;
        }
        log.info("device went offline");
        live.remoteClosed("Device announced it went offline");
      }
      return;
    }
    if (state.kind !== StateKind.ONLINE || !connectionId) {
      log.warn("ignoring a status message without kind or connection id", { kind: state.kind });
      return;
    }
    if (entry.live?.connectionId === connectionId) {
      // A QoS 1 redelivery of the ONLINE we accepted: repeat the acceptance.
      this.#publish(entry.topics.cmd, entry.live.acceptance);
      return;
    }
    if (state.device !== entry.device) {
      log.warn("refused a device announcing itself under another device's namespace", {
        claimed: state.device,
      });
      this.#publish(
        entry.topics.cmd,
        rejectFrame(
          new UnauthenticatedError(
            `Device "${state.device}" announced itself on the message namespace of device "${entry.device}"`,
          ),
          connectionId,
        ),
      );
      return;
    }
    const nd = state.nonce ?? new Uint8Array();
    const proof = state.mac ?? new Uint8Array();
    let key: Uint8Array | undefined;
    try {
      const verifies = (k: Uint8Array | undefined) =>
        k !== undefined && nd.byteLength >= 16 &&
        macEqual(proof, onlineMac(k, entry.device, connectionId, nd));
      key = await this.#opts.keys.linkKey(entry.device);
      // A proof that fails with a known key may come from a rotated token: read it again.
      if (key && !verifies(key)) key = await this.#opts.keys.linkKey(entry.device, { fresh: true });
      if (!verifies(key)) key = undefined;
    } catch (err) {
      log.warn("cannot check the device's proof now", { error: errorMessage(err) });
      this.#publish(
        entry.topics.cmd,
        rejectFrame(
          new UnavailableError(`aranya cannot check the credentials of "${entry.device}" now`),
          connectionId,
        ),
      );
      return;
    }
    if (!key) {
      log.warn("refused a device whose proof does not verify");
      this.#publish(
        entry.topics.cmd,
        rejectFrame(
          new UnauthenticatedError(`Device "${entry.device}" presented no valid credentials`),
          connectionId,
        ),
      );
      return;
    }
    const stale = () =>
      this.#stopped || epoch !== this.#epoch || this.#byNamespace.get(entry.ns) !== entry;
    if (stale()) {
      // The broker connection changed (or the device was removed) meanwhile:
      // the device dials again.
      log.info("dropping an ONLINE from before a reconnect");
      return;
    }
    const old = entry.live;
    if (old && !old.isClosed && this.#opts.registry.get(entry.device) === old) {
      // The device proved its key on a new connection while aranya holds a link: either a
      // second agent (the old connection answers: refused), or the old connection is gone
      // without its will (the broker disconnected it by administrative action). Ask it.
      if (await old.probe(this.#opts.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS)) {
        log.warn("refused a second connection of a connected device: its link answers");
        this.#publish(
          entry.topics.cmd,
          rejectFrame(
            new AlreadyExistsError(`Device "${entry.device}" is already connected`),
            connectionId,
          ),
        );
        return;
      }
      if (!old.isClosed) {
        log.warn("closing a link that no longer answers: the device connected again", {
          previous: old.connectionId,
        });
        old.lost(`Connection "${old.connectionId}" no longer answers; the device connected again`);
        this.#opts.registry.release(old);
      }
      if (stale()) {
        log.info("dropping an ONLINE from before a reconnect");
        return;
      }
    }
    const na = newNonce();
    const keys = sessionKeys(key, connectionId, nd, na);
    const link = new MqttServerLink({
      device: entry.device,
      maxFrameSize: this.maxFrameSize,
      connectionId,
      cmdTopic: entry.topics.cmd,
      sealer: new FrameSealer(keys.cmd, connectionId),
      opener: new FrameOpener(keys.msg, connectionId),
      offlineMac: offlineMac(key, entry.device, connectionId),
      acceptance: acceptFrame({
        connectionId,
        nonce: na,
        mac: acceptMac(key, entry.device, connectionId, nd, na),
      }),
      publish: (topic, frame) => this.#publishAsync(topic, frame),
    });
    if (!this.#opts.registry.claim(link)) {
      log.warn("refused a second connection of a connected device");
      this.#publish(
        entry.topics.cmd,
        rejectFrame(
          new AlreadyExistsError(`Device "${entry.device}" is already connected`),
          connectionId,
        ),
      );
      return;
    }
    entry.live = link;
    link.closed.then((info) => {
      if (entry.live === link) entry.live = undefined;
      log.info("link closed", { by: info.by, reason: info.reason });
    });
    // The acceptance goes out before any frame of the link (same topic, same client).
    this.#publish(entry.topics.cmd, link.acceptance);
    log.info("device connected", { agentVersion: state.agentVersion });
    this.#onLink?.(link);
  }

  /** Publishes at QoS 1 and only logs failures (acceptances, rejections). */
  #publish(topic: string, frame: Uint8Array): void {
    this.#publishAsync(topic, frame).catch((err) =>
      this.#log.warn("publish failed", { topic, error: errorMessage(err) })
    );
  }

  #publishAsync(topic: string, frame: Uint8Array): Promise<void> {
    const client = this.#client;
    if (!client) return Promise.reject(new UnavailableError("The MQTT link server is not running"));
    return publishQos1(client, topic, frame);
  }
}

/** True for the device's answer to a liveness probe (a frame on a probe sid). */
function isProbeAnswer(frame: Uint8Array): boolean {
  try {
    const sid = decodeMsg(frame).sid;
    return sid >= PROBE_SID_BASE && sid < DEVICE_SID_BIT;
  } catch {
    return false; // the session layer judges it
  }
}

/** What {@link MqttServerLink} needs from its server. */
interface MqttServerLinkInit {
  device: string;
  maxFrameSize: number;
  connectionId: string;
  cmdTopic: string;
  /** Seals aranya -> device frames. */
  sealer: FrameSealer;
  /** Opens device -> aranya frames. */
  opener: FrameOpener;
  /** The MAC an OFFLINE of this connection must carry. */
  offlineMac: Uint8Array;
  /** The acceptance frame (repeated on a redelivered ONLINE). */
  acceptance: Uint8Array;
  publish(topic: string, frame: Uint8Array): Promise<void>;
}

/**
 * Sids of liveness probes: the top 2^32 of aranya's range (below 2^63), which
 * its session client, counting up from below 2^32, never reaches.
 */
const PROBE_SID_BASE = (1n << 63n) - (1n << 32n);
const DEVICE_SID_BIT = 1n << 63n;

/** One accepted device connection, aranya side. */
class MqttServerLink extends BaseLink {
  readonly connectionId: string;
  readonly offlineMac: Uint8Array;
  readonly acceptance: Uint8Array;
  readonly #init: MqttServerLinkInit;
  readonly #pending = new Set<(err: Error) => void>();
  /** Probes sent so far. */
  #probes = 0n;
  /** The running probe. */
  #probing?: Promise<boolean>;
  /** Resolves the running probe: a frame of this connection arrived. */
  #heard?: () => void;

  constructor(init: MqttServerLinkInit) {
    super(init.device, MQTT_TRANSPORT, init.maxFrameSize);
    this.connectionId = init.connectionId;
    this.offlineMac = init.offlineMac;
    this.acceptance = init.acceptance;
    this.#init = init;
    this.closed.then(() => {
      const err = new UnavailableError(`Link to device "${this.device}" is closed`);
      for (const reject of this.#pending) reject(err);
      this.#pending.clear();
    });
  }

  /** A sealed frame from `{ns}/msg`: delivered when it opens, dropped otherwise. */
  receive(sealed: Uint8Array): void {
    const frame = this.#init.opener.open(sealed);
    if (!frame) return;
    this.#heard?.();
    if (this.#probes > 0n && isProbeAnswer(frame)) return;
    this.deliver(frame);
  }

  /**
   * Whether the device still answers on this connection: sends a sealed
   * command of no kind (`CMD_UNSPECIFIED`) on a fresh probe sid, which the
   * device's session server answers at once (`MSG_ERROR`, not supported), and
   * resolves true when any frame of this connection opens within `timeoutMs`.
   * Only this connection can answer: its keys are its own. The answer is taken
   * here and never reaches the session layer.
   */
  probe(timeoutMs: number): Promise<boolean> {
    if (this.isClosed) return Promise.resolve(false);
    if (this.#probing) return this.#probing; // one at a time
    const sid = PROBE_SID_BASE + (this.#probes++ % (1n << 32n));
    this.#probing = new Promise<boolean>((resolve) => {
      let settled = false;
      const done = (alive: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#heard = undefined;
        this.#probing = undefined;
        resolve(alive);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.#heard = () => done(true);
      this.closed.then(() => done(false));
      const frame = encodeCmd({
        kind: CmdKind.CMD_UNSPECIFIED,
        sid,
        seq: 0n,
        complete: true,
        payload: new Uint8Array(0),
      });
      this.#init.publish(this.#init.cmdTopic, this.#init.sealer.seal(frame)).catch(() =>
        done(false)
      );
    });
    return this.#probing;
  }

  /** The device said OFFLINE (or its will did). */
  remoteClosed(reason: string): void {
    this.markClosed("remote", reason);
  }

  /** aranya's broker connection dropped; the device learns it once aranya reconnects. */
  lost(reason: string): void {
    if (this.isClosed) return;
    this.markClosed("error", reason);
    this.#tellDevice(reason);
  }

  protected write(frame: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => reject(err);
      this.#pending.add(fail);
      this.#init.publish(this.#init.cmdTopic, this.#init.sealer.seal(frame)).then(
        () => {
          this.#pending.delete(fail);
          resolve();
        },
        (err) => {
          this.#pending.delete(fail);
          reject(
            new UnavailableError(
              `Publishing to device "${this.device}" failed: ${errorMessage(err)}`,
            ),
          );
        },
      );
    });
  }

  protected shutdown(reason: string): void {
    this.#tellDevice(reason);
  }

  #tellDevice(reason: string): void {
    const frame = rejectFrame(
      new UnavailableError(`aranya closed the link: ${reason}`),
      this.connectionId,
    );
    this.#init.publish(this.#init.cmdTopic, this.#init.sealer.seal(frame)).catch(() => {});
  }
}
