/**
 * The MQTT transport, device side: one dial is one MQTT client connection to
 * the broker, announced to aranya on `{ns}/status` and answered by aranya on
 * `{ns}/cmd` (protocol in aranya/connectivity/mqtt/mqtt_link_server.ts).
 *
 * A dial:
 * 1. connects (MQTT 5, clean start, no session kept after the connection)
 *    with a will: a sid-0 `MSG_STATE` `OFFLINE` naming this connection with
 *    its MAC, on `{ns}/status`, QoS 1; unless the config names other broker
 *    credentials, the user name is the device and the password is derived
 *    from its link key (what aranya's dynamic security sets up);
 * 2. subscribes `{ns}/cmd` at QoS 1;
 * 3. publishes `ONLINE` (device, a random connection id, a nonce and the MAC
 *    proving the link key; never the token) on `{ns}/status`;
 * 4. waits for aranya's answer naming this connection id: the acceptance (a
 *    sid-0 `CMD_UNSPECIFIED` with an `MqttAccept` whose MAC proves that aranya
 *    holds the key: a forged one is ignored) resolves with the link; a
 *    `CMD_REJECT` rejects with the domain error it stands for. Everything else
 *    on `{ns}/cmd` before the answer is dropped.
 *
 * Once linked, every frame either way is sealed with the connection's keys
 * (common/mqtt_seal.ts): a frame on `{ns}/cmd` that does not open (forged by
 * someone on the broker, replayed, another connection's) is dropped, so no one
 * without the device's token can make arhat do anything, even on a broker with
 * no ACLs. A sealed sid-0 `CMD_REJECT` means aranya closed the link.
 *
 * mqtt.js auto-reconnect is off: a dropped broker connection closes the link
 * (`by: "error"`) and the reconnect loop above dials again.
 *
 * Sessions and client ids: each dial starts a clean MQTT session. A session
 * kept across dials would carry nothing useful (every dial is a new
 * connection id, and frames queued for an earlier one are dropped), and it
 * would lock devices out: when a device re-dials with its stable client id
 * before the broker noticed that the old connection died, the broker takes the
 * session over and, for a continued session, discards the old connection's
 * will (mosquitto does so), so aranya would never learn that the old link is
 * gone and would refuse every new one as "already connected". With a clean
 * start the taken-over connection's session ends, the broker publishes its
 * will, and aranya closes the old link before it reads the new `ONLINE`.
 * The other consequence: two agents with the same client id do not reach
 * aranya's "already connected" rule; the newer one wins and the older one's
 * link closes (`by: "error"`). Agents with distinct client ids are refused by
 * aranya instead; and a device that re-dials under a new client id before the
 * broker noticed its dead connection is refused as already connected until the
 * broker's keepalive check publishes the old will.
 *
 * @module
 */
import { setTcpNoDelay } from "@aranya/common/tcp_nodelay";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import {
  type Cmd,
  CmdKind,
  decodeCmd,
  decodeReject,
  stateFrame,
  StateKind,
} from "@aranya/common/envelope";
import {
  AranyaError,
  CanceledError,
  errorMessage,
  InvalidInputError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import type { Link, LinkDialer } from "@aranya/common/link";
import { BaseLink } from "@aranya/common/link_base";
import { type Logger, nullLogger } from "@aranya/common/log";
import {
  acceptMac,
  brokerPassword,
  FrameOpener,
  FrameSealer,
  linkKey,
  macEqual,
  newNonce,
  offlineMac,
  onlineMac,
  SEAL_OVERHEAD,
  sessionKeys,
} from "@aranya/common/mqtt_seal";
import {
  asBuffer,
  decodeAccept,
  endMqttClient,
  MQTT_DEFAULT_MAX_FRAME_SIZE,
  MQTT_TRANSPORT,
  mqttTopics,
  publishQos1,
  validateMessageNamespace,
} from "@aranya/common/mqtt_protocol";

export { MQTT_DEFAULT_MAX_FRAME_SIZE, MQTT_TRANSPORT };

/** Options of {@link MqttLinkDialer}. */
export interface MqttLinkDialerOptions {
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
  /** This device: "<namespace>/<name>". */
  device: string;
  /** Prefix of the device's topics (`{ns}/cmd`, `{ns}/msg`, `{ns}/status`). */
  messageNamespace: string;
  /** The device's token: its link key is derived from it (the token is never sent). */
  token: string;
  /** MQTT client id; default `arhat-<namespace>-<name>` (see the module doc). */
  clientId?: string;
  /**
   * MQTT keepalive, seconds, 1..65535 (default 120: one PINGREQ/PINGRESP pair every two minutes
   * keeps idle traffic near 130 KB/day on metered links). The broker publishes the will after
   * 1.5 times it.
   */
  keepaliveSeconds?: number;
  /** Broker user name (default: the device, "<namespace>/<name>"). */
  username?: string;
  /** Broker password (default, without `username`: derived from the device's link key). */
  password?: string;
  /** Largest frame either way (default {@link MQTT_DEFAULT_MAX_FRAME_SIZE}). */
  maxFrameSize?: number;
  /** Time allowed for connecting and for aranya's answer, ms (default 15000). */
  dialTimeoutMs?: number;
  /** Reported in the ONLINE announcement. */
  agentVersion?: string;
  log?: Logger;
}

/** The default client id of `device`: `arhat-<namespace>-<name>`, limited to [A-Za-z0-9_-]. */
export function defaultMqttClientId(device: string): string {
  return `arhat-${device}`.replace(/[^A-Za-z0-9_-]/g, "-");
}

/** Device side of the MQTT transport; see the module doc. */
export class MqttLinkDialer implements LinkDialer {
  readonly transport = MQTT_TRANSPORT;
  /** The MQTT client id every dial uses. */
  readonly clientId: string;
  readonly #opts: MqttLinkDialerOptions;
  readonly #topics: { cmd: string; msg: string; status: string };
  readonly #maxFrameSize: number;
  readonly #keepalive: number;
  readonly #log: Logger;

  /** Validates options; does no I/O. */
  constructor(opts: MqttLinkDialerOptions) {
    if (!/^[^/]+\/[^/]+$/.test(opts.device)) {
      throw new InvalidInputError(
        `Device "${opts.device}" is not of the form "<namespace>/<name>"`,
      );
    }
    const ns = opts.messageNamespace;
    validateMessageNamespace(ns);
    if (!/^mqtts?:\/\//.test(opts.url)) {
      throw new InvalidInputError(
        `Broker URL "${opts.url}" must start with "mqtt://" or "mqtts://"`,
      );
    }
    this.#keepalive = opts.keepaliveSeconds ?? 120;
    if (!Number.isInteger(this.#keepalive) || this.#keepalive < 1 || this.#keepalive > 65535) {
      throw new InvalidInputError(
        `Keepalive of ${opts.keepaliveSeconds} seconds is outside 1..65535`,
      );
    }
    this.#maxFrameSize = opts.maxFrameSize ?? MQTT_DEFAULT_MAX_FRAME_SIZE;
    if (!Number.isInteger(this.#maxFrameSize) || this.#maxFrameSize < 64) {
      throw new InvalidInputError(`Invalid maxFrameSize ${opts.maxFrameSize}`);
    }
    this.#opts = opts;
    this.#topics = mqttTopics(ns);
    this.clientId = opts.clientId ?? defaultMqttClientId(opts.device);
    this.#log = (opts.log ?? nullLogger).with({
      transport: MQTT_TRANSPORT,
      device: opts.device,
      clientId: this.clientId,
    });
  }

  /**
   * Connects, announces the device and waits for aranya's answer. Resolves
   * with the link once aranya accepted this connection; rejects with the
   * error of aranya's `CMD_REJECT` (`UnauthenticatedError`,
   * `AlreadyExistsError`, ...), `UnauthenticatedError` when the broker refuses
   * the MQTT credentials, `UnavailableError` when the broker cannot be reached
   * or aranya does not answer within `dialTimeoutMs`, `CanceledError` when
   * `signal` aborts. A failed dial leaves no connection behind.
   */
  dial(signal: AbortSignal): Promise<Link> {
    if (signal.aborted) {
      return Promise.reject(
        new CanceledError(`Dialing for device "${this.#opts.device}" was canceled`),
      );
    }
    const o = this.#opts;
    const connectionId = crypto.randomUUID();
    const log = this.#log.with({ connectionId });
    const key = linkKey(o.token);
    const offline = stateFrame({
      kind: StateKind.OFFLINE,
      device: o.device,
      connectionId,
      mac: offlineMac(key, o.device, connectionId),
    });
    const nd = newNonce();
    const timeoutMs = o.dialTimeoutMs ?? 15_000;
    const topics = this.#topics;
    const buf = (v: string | Uint8Array | undefined) =>
      v === undefined ? undefined : typeof v === "string" ? v : asBuffer(v);
    const clientOpts: IClientOptions = {
      clientId: this.clientId,
      username: o.username ?? o.device,
      password: o.username === undefined ? brokerPassword(key) : o.password,
      protocolVersion: 5,
      // A clean start, and the session ends with the connection (see the module doc).
      clean: true,
      // The broker drops packets above twice a sealed maximum frame (and headers) instead of
      // sending them: a frame up to that size still arrives and closes the link as too large.
      properties: {
        sessionExpiryInterval: 0,
        maximumPacketSize: 2 * (this.#maxFrameSize + SEAL_OVERHEAD) + 4096,
      },
      keepalive: this.#keepalive,
      reconnectPeriod: 0,
      connectTimeout: timeoutMs,
      resubscribe: false,
      will: { topic: topics.status, payload: asBuffer(offline), qos: 1, retain: false },
      ca: buf(o.ca),
      cert: buf(o.cert),
      key: buf(o.key),
      servername: o.servername,
    };

    return new Promise<Link>((resolve, reject) => {
      let client: MqttClient;
      try {
        client = mqtt.connect(o.url, clientOpts);
      } catch (err) {
        reject(new InvalidInputError(`Cannot connect to broker "${o.url}": ${errorMessage(err)}`));
        return;
      }
      let phase: "connecting" | "announced" | "linked" | "failed" = "connecting";
      let link: MqttDeviceLink | undefined;
      let lastError = "";

      const fail = (err: AranyaError, announced: boolean) => {
        if (phase === "linked" || phase === "failed") return;
        phase = "failed";
        cleanup();
        log.info("dial failed", { error: err.message });
        // Once announced, aranya may have accepted us meanwhile: say goodbye.
        const bye = announced && client.connected
          ? publishQos1(client, topics.status, offline, 2_000)
          : Promise.resolve();
        bye.finally(() => endMqttClient(client)).finally(() => reject(err));
      };
      const onAbort = () =>
        fail(
          new CanceledError(`Dialing for device "${o.device}" was canceled`),
          phase === "announced",
        );
      const timer = setTimeout(() => {
        fail(
          phase === "announced"
            ? new UnavailableError(
              `aranya did not answer device "${o.device}" on "${topics.status}" within ${timeoutMs} ms`,
            )
            : new UnavailableError(
              `Could not connect to broker "${o.url}" within ${timeoutMs} ms${
                lastError ? `: ${lastError}` : ""
              }`,
            ),
          phase === "announced",
        );
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
      };
      signal.addEventListener("abort", onAbort, { once: true });

      let refusedCredentials = false;
      client.on("error", (err) => {
        lastError = err.message;
        const code = (err as { code?: unknown }).code;
        // CONNACK "bad user name or password" / "not authorized" (MQTT 5 and 3.1.1 codes).
        if (code === 0x86 || code === 0x87 || code === 4 || code === 5) refusedCredentials = true;
        log.debug("MQTT client error", { error: err.message, code });
      });
      client.on("close", () => {
        if (phase === "linked") {
          link?.lost("Connection to the MQTT broker was lost");
        } else if (refusedCredentials) {
          fail(
            new UnauthenticatedError(
              `Broker "${o.url}" refused the credentials of client "${this.clientId}": ${lastError}`,
            ),
            false,
          );
        } else {
          fail(
            new UnavailableError(
              `Connection to broker "${o.url}" closed before aranya accepted device "${o.device}"${
                lastError ? `: ${lastError}` : ""
              }`,
            ),
            false,
          );
        }
      });
      let opener: FrameOpener | undefined;
      let dropped = 0;
      client.on("message", (topic, payload) => {
        if (topic !== topics.cmd) return;
        const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
        if (phase === "linked") {
          // Only what opens with this connection's key is aranya's.
          const frame = opener?.open(bytes);
          if (!frame) {
            if (++dropped % 100 === 1) {
              log.warn("dropped frames on the cmd topic that do not open", { dropped });
            }
            return;
          }
          let cmd: Cmd | undefined;
          try {
            cmd = decodeCmd(frame);
          } catch { /* not ours to judge: the session layer decodes */ }
          if (cmd?.sid === 0n && cmd.kind === CmdKind.CMD_REJECT) {
            link?.closedByAranya(decodeReject(cmd.payload).error.message);
            return;
          }
          if (cmd?.sid === 0n && cmd.kind === CmdKind.CMD_UNSPECIFIED) return;
          return link?.receive(frame);
        }
        let cmd: Cmd | undefined;
        try {
          cmd = decodeCmd(bytes);
        } catch { /* earlier connections' sealed traffic */ }
        const control = cmd !== undefined && cmd.sid === 0n &&
          (cmd.kind === CmdKind.CMD_UNSPECIFIED || cmd.kind === CmdKind.CMD_REJECT);
        if (phase !== "announced" || !control || !cmd) return; // earlier connections' traffic
        if (cmd.kind === CmdKind.CMD_UNSPECIFIED) {
          let accept;
          try {
            accept = decodeAccept(cmd.payload);
          } catch {
            return;
          }
          if (accept.connectionId !== connectionId) return;
          if (!macEqual(accept.mac, acceptMac(key, o.device, connectionId, nd, accept.nonce))) {
            log.warn("ignoring an acceptance whose proof does not verify");
            return;
          }
          const keys = sessionKeys(key, connectionId, nd, accept.nonce);
          opener = new FrameOpener(keys.cmd, connectionId);
          phase = "linked";
          cleanup();
          link = new MqttDeviceLink({
            device: o.device,
            maxFrameSize: this.#maxFrameSize,
            client,
            msgTopic: topics.msg,
            statusTopic: topics.status,
            offline,
            sealer: new FrameSealer(keys.msg, connectionId),
          });
          log.info("aranya accepted the connection");
          resolve(link);
          return;
        }
        const { error, connectionId: named } = decodeReject(cmd.payload);
        if (named !== connectionId) return;
        fail(error, false);
      });
      client.on("connect", () => {
        setTcpNoDelay(client);
        if (phase !== "connecting") return;
        client.subscribeAsync(topics.cmd, { qos: 1 })
          .then((granted) => {
            if (phase !== "connecting") return;
            if (granted.some((g) => g.qos >= 0x80)) {
              throw new UnavailableError(
                `Broker "${o.url}" refused the subscription to "${topics.cmd}"`,
              );
            }
            phase = "announced";
            const online = stateFrame({
              kind: StateKind.ONLINE,
              device: o.device,
              connectionId,
              agentVersion: o.agentVersion,
              nonce: nd,
              mac: onlineMac(key, o.device, connectionId, nd),
            });
            return publishQos1(client, topics.status, online);
          })
          .catch((err) =>
            fail(
              err instanceof AranyaError ? err : new UnavailableError(
                `Announcing device "${o.device}" on "${topics.status}" failed: ${
                  errorMessage(err)
                }`,
              ),
              phase === "announced",
            )
          );
      });
    });
  }
}

/** What {@link MqttDeviceLink} needs. */
interface MqttDeviceLinkInit {
  device: string;
  maxFrameSize: number;
  client: MqttClient;
  msgTopic: string;
  statusTopic: string;
  /** The OFFLINE frame naming this connection. */
  offline: Uint8Array;
  /** Seals device -> aranya frames. */
  sealer: FrameSealer;
}

/** One accepted connection, device side. */
class MqttDeviceLink extends BaseLink {
  readonly #init: MqttDeviceLinkInit;
  readonly #pending = new Set<(err: Error) => void>();

  constructor(init: MqttDeviceLinkInit) {
    super(init.device, MQTT_TRANSPORT, init.maxFrameSize);
    this.#init = init;
    this.closed.then(() => {
      const err = new UnavailableError(`Link of device "${this.device}" is closed`);
      for (const reject of this.#pending) reject(err);
      this.#pending.clear();
    });
  }

  /** A frame from `{ns}/cmd`. */
  receive(frame: Uint8Array): void {
    this.deliver(frame);
  }

  /** aranya sent a CMD_REJECT naming this connection. */
  closedByAranya(message: string): void {
    if (this.isClosed) return;
    this.markClosed("remote", message);
    endMqttClient(this.#init.client);
  }

  /** The broker connection dropped. */
  lost(reason: string): void {
    if (this.isClosed) return;
    this.markClosed("error", reason);
    endMqttClient(this.#init.client);
  }

  protected write(frame: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => reject(err);
      this.#pending.add(fail);
      const sealed = this.#init.sealer.seal(frame);
      this.#init.client.publish(this.#init.msgTopic, asBuffer(sealed), { qos: 1 }, (err) => {
        this.#pending.delete(fail);
        if (err) {
          reject(
            new UnavailableError(
              `Publishing for device "${this.device}" failed: ${errorMessage(err)}`,
            ),
          );
        } else resolve();
      });
    });
  }

  protected shutdown(_reason: string): void {
    const { client, statusTopic, offline } = this.#init;
    const bye = client.connected
      ? publishQos1(client, statusTopic, offline, 2_000).catch(() => {})
      : Promise.resolve();
    bye.finally(() => endMqttClient(client));
  }
}
