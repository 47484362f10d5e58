/**
 * The self-checking record format of arhat's on-disk state: one key (a pod
 * uid) and one opaque payload per file, guarded by a CRC-32 so a torn or
 * bit-flipped file is recognised instead of being decoded into garbage.
 *
 * Layout, big-endian: `"ARJ1"` magic (4) | CRC-32 of everything after it (4) |
 * key length (2) | key, UTF-8 | payload length (4) | payload.
 */
import { InvalidInputError } from "@aranya/common/errors";

/** One stored record. */
export interface StateRecord {
  /** What the record is about, e.g. a pod uid. Non-empty, at most 1024 UTF-8 bytes. */
  key: string;
  /** Opaque bytes (a protobuf message). */
  payload: Uint8Array;
}

const MAGIC = [0x41, 0x52, 0x4a, 0x31]; // "ARJ1"
const HEADER = 4 + 4 + 2;
const MAX_KEY_BYTES = 1024;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (IEEE 802.3, as zlib and PNG compute it) of `data`. */
export function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Serialises a record.
 *
 * @throws InvalidInputError when the key is empty or longer than 1024 UTF-8 bytes.
 */
export function encodeRecord(record: StateRecord): Uint8Array {
  const key = new TextEncoder().encode(record.key);
  if (key.length === 0 || key.length > MAX_KEY_BYTES) {
    throw new InvalidInputError(
      `Record key "${record.key}" must be 1 to ${MAX_KEY_BYTES} bytes long; got ${key.length}`,
    );
  }
  const out = new Uint8Array(HEADER + key.length + 4 + record.payload.length);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint16(8, key.length);
  out.set(key, HEADER);
  view.setUint32(HEADER + key.length, record.payload.length);
  out.set(record.payload, HEADER + key.length + 4);
  view.setUint32(4, crc32(out.subarray(8)));
  return out;
}

/**
 * Parses a record written by {@link encodeRecord}. The payload is a copy.
 *
 * @throws InvalidInputError naming what is wrong (magic, lengths, checksum) when `bytes` is not a
 *   complete, intact record.
 */
export function decodeRecord(bytes: Uint8Array): StateRecord {
  if (bytes.length < HEADER + 4) {
    throw new InvalidInputError(`Record is truncated: ${bytes.length} bytes`);
  }
  if (MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new InvalidInputError('Record has no "ARJ1" magic: not an arhat state file');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getUint32(4);
  const actual = crc32(bytes.subarray(8));
  if (stored !== actual) {
    throw new InvalidInputError(
      `Record checksum mismatch: stored ${hex(stored)}, computed ${hex(actual)}`,
    );
  }
  const keyLength = view.getUint16(8);
  if (keyLength === 0 || HEADER + keyLength + 4 > bytes.length) {
    throw new InvalidInputError(`Record key length ${keyLength} does not fit the record`);
  }
  const payloadLength = view.getUint32(HEADER + keyLength);
  const end = HEADER + keyLength + 4 + payloadLength;
  if (end !== bytes.length) {
    throw new InvalidInputError(
      `Record payload length ${payloadLength} does not match the record size ${bytes.length}`,
    );
  }
  let key: string;
  try {
    key = new TextDecoder("utf-8", { fatal: true }).decode(
      bytes.subarray(HEADER, HEADER + keyLength),
    );
  } catch {
    throw new InvalidInputError("Record key is not valid UTF-8");
  }
  return { key, payload: bytes.slice(HEADER + keyLength + 4, end) };
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}
