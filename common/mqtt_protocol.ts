/**
 * What both ends of the MQTT transport share: topic names, the namespace
 * check, the frame size default, QoS 1 publishing and ending an mqtt.js
 * client. (aranya and arhat cannot import each other; both import common.)
 */
import { Buffer } from "node:buffer";
import type { MqttClient } from "mqtt";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CmdKind, encodeCmd } from "./envelope.ts";
import { errorMessage, InvalidInputError, ProtocolError, UnavailableError } from "./errors.ts";
import { MqttAcceptSchema } from "@aranya/proto/gen/aranya/session_pb";

/** The transport's name. */
export const MQTT_TRANSPORT = "mqtt";

/** Default largest frame, both directions: 128 KiB. */
export const MQTT_DEFAULT_MAX_FRAME_SIZE = 128 * 1024;

/** Topic names of one message namespace. */
export function mqttTopics(messageNamespace: string): { cmd: string; msg: string; status: string } {
  return {
    cmd: `${messageNamespace}/cmd`,
    msg: `${messageNamespace}/msg`,
    status: `${messageNamespace}/status`,
  };
}

/**
 * Throws `InvalidInputError` unless `ns` can prefix topic names: not empty, no
 * wildcard, no NUL, no leading "$" (reserved for broker topics), no trailing "/".
 */
export function validateMessageNamespace(ns: string): void {
  if (
    ns.length === 0 || /[+#]/.test(ns) || ns.includes("\0") || ns.startsWith("$") ||
    ns.endsWith("/")
  ) {
    throw new InvalidInputError(
      `Message namespace "${ns}" is not a valid MQTT topic prefix ` +
        `(it must be non-empty, without "+", "#" or NUL, not start with "$" nor end with "/")`,
    );
  }
}

/** A view of `bytes` as a Buffer, without copying (mqtt.js wants Buffers). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Publishes at QoS 1; resolves on the broker's PUBACK, rejects after `timeoutMs` if given. */
export function publishQos1(
  client: MqttClient,
  topic: string,
  frame: Uint8Array,
  timeoutMs?: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = timeoutMs === undefined ? undefined : setTimeout(
      () => reject(new UnavailableError(`No PUBACK on "${topic}" within ${timeoutMs} ms`)),
      timeoutMs,
    );
    client.publish(topic, asBuffer(frame), { qos: 1 }, (err) => {
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Ends an mqtt.js client: a clean DISCONNECT once its in-flight publishes are
 * acknowledged, or, when it is not connected or that takes longer than
 * `graceMs`, by destroying the socket. Never rejects.
 */
export function endMqttClient(client: MqttClient, graceMs = 2_000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.stream?.destroy();
      resolve();
    }, graceMs);
    client.end(!client.connected, {}, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** aranya's acceptance of an ONLINE (a sid-0 `CMD_UNSPECIFIED`; see aranya's MQTT link server). */
export interface MqttAcceptInit {
  connectionId: string;
  /** aranya's nonce. */
  nonce: Uint8Array;
  /** The proof of the device's link key (common/mqtt_seal.ts). */
  mac: Uint8Array;
}

/** The acceptance frame aranya publishes on `{ns}/cmd`. */
export function acceptFrame(a: MqttAcceptInit): Uint8Array {
  return encodeCmd({
    kind: CmdKind.CMD_UNSPECIFIED,
    sid: 0n,
    seq: 0n,
    complete: true,
    payload: toBinary(MqttAcceptSchema, create(MqttAcceptSchema, a)),
  });
}

/** Decodes an acceptance's payload; throws ProtocolError. */
export function decodeAccept(payload: Uint8Array): MqttAcceptInit {
  try {
    const a = fromBinary(MqttAcceptSchema, payload);
    return { connectionId: a.connectionId, nonce: a.nonce, mac: a.mac };
  } catch (err) {
    throw new ProtocolError(`Malformed MQTT acceptance: ${errorMessage(err)}`);
  }
}
