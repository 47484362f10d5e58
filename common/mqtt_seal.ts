/**
 * End-to-end authentication and encryption of the MQTT link, so that the
 * broker (and anyone else on it) is never trusted: it cannot read a pod's
 * Secrets, forge a command, replay one, or learn the device's token.
 *
 * Keys, all HMAC-SHA256:
 * - the device's link key `K = HMAC(token, "aranya.arhat.dev/mqtt/v1")`:
 *   both ends derive it from the token in the device's credentials; neither
 *   the token nor K is ever published;
 * - its broker password `HMAC(K, "broker-password")` (base64url): a broker
 *   that stores or logs it learns nothing that opens the link;
 * - per connection, from the device's nonce `nd` and aranya's nonce `na`:
 *   `HMAC(K, "cmd" | id | nd | na)` seals aranya -> device frames and
 *   `HMAC(K, "msg" | id | nd | na)` device -> aranya frames.
 *
 * Proofs: the device's ONLINE carries `nd` and `HMAC(K, "online" | device |
 * id | nd)`; aranya's acceptance carries `na` and `HMAC(K, "accept" | device |
 * id | nd | na)`; the OFFLINE announcement (also the device's MQTT will)
 * carries `HMAC(K, "offline" | device | id)`. Fields are joined with NUL.
 *
 * Frames: AES-256-GCM; a sealed frame is an 8-byte big-endian counter, then
 * the ciphertext and its 16-byte tag. The IV is 4 zero bytes and the counter;
 * the additional data is the connection id. A receiver opens a frame only
 * when its counter is above the last one it opened, so QoS 1 redeliveries and
 * replays are dropped, and frames of another connection never open.
 *
 * Hand-written on node:crypto: no npm package does this MQTT-specific
 * framing; the primitives are the platform's.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, createHmac, timingSafeEqual } from "node:crypto";

/** Bytes a sealed frame adds: the counter and the GCM tag. */
export const SEAL_OVERHEAD = 8 + 16;
/** Length of each side's connection nonce. */
export const NONCE_BYTES = 16;

function hmac(key: Uint8Array | string, ...parts: (string | Uint8Array)[]): Uint8Array {
  const h = createHmac("sha256", key);
  parts.forEach((p, i) => {
    if (i > 0) h.update(new Uint8Array([0]));
    h.update(p);
  });
  return new Uint8Array(h.digest());
}

/** The device's link key, from its token. */
export function linkKey(token: string): Uint8Array {
  return hmac(token, "aranya.arhat.dev/mqtt/v1");
}

/** The device's MQTT broker password, from its link key. */
export function brokerPassword(key: Uint8Array): string {
  return Buffer.from(hmac(key, "broker-password")).toString("base64url");
}

/** A fresh random nonce. */
export function newNonce(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

/** The MAC of a device's ONLINE announcement. */
export function onlineMac(key: Uint8Array, device: string, id: string, nd: Uint8Array): Uint8Array {
  return hmac(key, "online", device, id, nd);
}

/** The MAC of aranya's acceptance. */
export function acceptMac(
  key: Uint8Array,
  device: string,
  id: string,
  nd: Uint8Array,
  na: Uint8Array,
): Uint8Array {
  return hmac(key, "accept", device, id, nd, na);
}

/** The MAC of a device's OFFLINE announcement (and will). */
export function offlineMac(key: Uint8Array, device: string, id: string): Uint8Array {
  return hmac(key, "offline", device, id);
}

/** Constant-time comparison of two MACs. */
export function macEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

/** The two directions of one connection. */
export interface SessionKeys {
  /** aranya -> device. */
  cmd: Uint8Array;
  /** device -> aranya. */
  msg: Uint8Array;
}

/** The session keys of connection `id`. */
export function sessionKeys(
  key: Uint8Array,
  id: string,
  nd: Uint8Array,
  na: Uint8Array,
): SessionKeys {
  return { cmd: hmac(key, "cmd", id, nd, na), msg: hmac(key, "msg", id, nd, na) };
}

function iv(counter: bigint): Uint8Array {
  const b = new Uint8Array(12);
  new DataView(b.buffer).setBigUint64(4, counter);
  return b;
}

/** Seals the frames of one direction of one connection. */
export class FrameSealer {
  #counter = 0n;
  readonly #aad: Uint8Array;

  constructor(readonly key: Uint8Array, connectionId: string) {
    this.#aad = new TextEncoder().encode(connectionId);
  }

  /** The sealed form of `frame`. */
  seal(frame: Uint8Array): Uint8Array {
    const counter = ++this.#counter;
    const c = createCipheriv("aes-256-gcm", this.key, iv(counter));
    c.setAAD(this.#aad);
    const body = Buffer.concat([c.update(frame), c.final(), c.getAuthTag()]);
    const out = new Uint8Array(8 + body.byteLength);
    new DataView(out.buffer).setBigUint64(0, counter);
    out.set(body, 8);
    return out;
  }
}

/** Opens the frames of one direction of one connection, in order, each once. */
export class FrameOpener {
  #last = 0n;
  readonly #aad: Uint8Array;

  constructor(readonly key: Uint8Array, connectionId: string) {
    this.#aad = new TextEncoder().encode(connectionId);
  }

  /**
   * The frame inside `sealed`, or undefined when it does not open: forged,
   * damaged, of another connection or key, or a replay (counter not above the
   * last opened one). Never throws.
   */
  open(sealed: Uint8Array): Uint8Array | undefined {
    if (sealed.byteLength < SEAL_OVERHEAD) return undefined;
    const counter = new DataView(sealed.buffer, sealed.byteOffset, 8).getBigUint64(0);
    if (counter <= this.#last) return undefined;
    try {
      const d = createDecipheriv("aes-256-gcm", this.key, iv(counter));
      d.setAAD(this.#aad);
      d.setAuthTag(sealed.subarray(sealed.byteLength - 16));
      const out = Buffer.concat([d.update(sealed.subarray(8, sealed.byteLength - 16)), d.final()]);
      this.#last = counter;
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    } catch {
      return undefined;
    }
  }
}
