/**
 * OpenSSH known_hosts files and host key checks, for deploy's SSH connections.
 *
 * Supported: plain host patterns (comma-separated, `*` and `?` wildcards,
 * `!` negation), "[host]:port" names for ports other than 22, hashed names
 * ("|1|salt|hash", HMAC-SHA1 of the name keyed with the salt), and the
 * `@revoked` marker. `@cert-authority` lines are ignored: deploy does not
 * accept host certificates. Pure functions, no I/O.
 */
import { createHash, createHmac } from "node:crypto";
import { Buffer } from "node:buffer";

/** A public key: its algorithm name and its SSH wire-format blob. */
export interface PublicKey {
  /** "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa", ... */
  readonly type: string;
  readonly blob: Uint8Array;
}

/** One key line of a known_hosts file. */
export interface KnownHostEntry {
  /** 1-based line number, for messages. */
  readonly line: number;
  readonly marker?: "revoked" | "cert-authority";
  /** The host field as written: patterns, or one hashed name. */
  readonly hosts: string;
  readonly key: PublicKey;
}

/** Outcome of checking a presented host key. */
export type HostKeyVerdict =
  /** A matching entry (or the expected key) has this key. */
  | { readonly kind: "trusted" }
  /** An `@revoked` line lists this key. */
  | { readonly kind: "revoked"; readonly line: number }
  /** Entries for this host exist, none with this key; `known` are their fingerprints. */
  | { readonly kind: "mismatch"; readonly known: string[] }
  /** No entry names this host. */
  | { readonly kind: "unknown" };

/**
 * Parses known_hosts text. Blank lines, comments and lines that are not
 * "[marker] hosts keytype base64 [comment]" with a decodable key are skipped,
 * as OpenSSH skips them.
 */
export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === "" || raw.startsWith("#")) continue;
    const fields = raw.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (fields[0]?.startsWith("@")) {
      const m = fields.shift()!;
      if (m === "@revoked") marker = "revoked";
      else if (m === "@cert-authority") marker = "cert-authority";
      else continue;
    }
    const [hosts, type, b64] = fields;
    if (!hosts || !type || !b64) continue;
    const key = decodeKey(type, b64);
    if (!key) continue;
    entries.push({ line: i + 1, marker, hosts, key });
  }
  return entries;
}

/**
 * Parses a public key line "type base64 [comment]" (as in a .pub file or
 * after the host field of known_hosts). Returns undefined when it is not one
 * (callers word their own message).
 */
export function parsePublicKeyLine(line: string): PublicKey | undefined {
  const [type, b64] = line.trim().split(/\s+/);
  if (!type || !b64) return undefined;
  return decodeKey(type, b64);
}

/** The key type written inside an SSH wire-format key blob, or undefined when malformed. */
export function blobKeyType(blob: Uint8Array): string | undefined {
  if (blob.length < 4) return undefined;
  const len = new DataView(blob.buffer, blob.byteOffset, blob.byteLength).getUint32(0);
  if (len === 0 || len > 64 || 4 + len > blob.length) return undefined;
  return new TextDecoder().decode(blob.subarray(4, 4 + len));
}

/** "SHA256:<base64 without padding>" of a key blob, as `ssh-keygen -l` prints it. */
export function sha256Fingerprint(blob: Uint8Array): string {
  const digest = createHash("sha256").update(blob).digest("base64");
  return `SHA256:${digest.replace(/=+$/, "")}`;
}

/** The name known_hosts uses for a host: "host" on port 22, "[host]:port" otherwise. */
export function knownHostsName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** A hashed known_hosts name "|1|salt|hash" for `name` (what `ssh-keygen -H` writes). */
export function hashKnownHostsName(name: string, salt: Uint8Array): string {
  const mac = createHmac("sha1", Buffer.from(salt)).update(name).digest("base64");
  return `|1|${Buffer.from(salt).toString("base64")}|${mac}`;
}

/** True when the host field of an entry names `host` on `port`. */
export function entryMatchesHost(entry: KnownHostEntry, host: string, port: number): boolean {
  const name = knownHostsName(host, port);
  if (entry.hosts.startsWith("|")) return hashedMatches(entry.hosts, name);
  let matched = false;
  for (const pattern of entry.hosts.split(",")) {
    if (pattern === "") continue;
    const negated = pattern.startsWith("!");
    const glob = (negated ? pattern.slice(1) : pattern).toLowerCase();
    if (!globMatches(glob, name)) continue;
    if (negated) return false;
    matched = true;
  }
  return matched;
}

/**
 * Checks `presented` against the entries. A key on any `@revoked` line is
 * refused whatever that line's host patterns say (stricter than OpenSSH: a
 * revoked key is revoked everywhere). Otherwise the key is trusted when an
 * entry for this host has it; when entries for this host exist but none has
 * it, that is a mismatch; else the host is unknown.
 */
export function checkHostKey(
  entries: readonly KnownHostEntry[],
  host: string,
  port: number,
  presented: PublicKey,
): HostKeyVerdict {
  for (const e of entries) {
    if (e.marker === "revoked" && sameKey(e.key, presented)) {
      return { kind: "revoked", line: e.line };
    }
  }
  const known: string[] = [];
  for (const e of entries) {
    if (e.marker !== undefined || !entryMatchesHost(e, host, port)) continue;
    if (sameKey(e.key, presented)) return { kind: "trusted" };
    known.push(sha256Fingerprint(e.key.blob));
  }
  return known.length > 0 ? { kind: "mismatch", known } : { kind: "unknown" };
}

/** Key types the entries hold for this host (not revoked, not CA lines), in file order. */
export function knownKeyTypes(
  entries: readonly KnownHostEntry[],
  host: string,
  port: number,
): string[] {
  const types: string[] = [];
  for (const e of entries) {
    if (e.marker !== undefined || !entryMatchesHost(e, host, port)) continue;
    if (!types.includes(e.key.type)) types.push(e.key.type);
  }
  return types;
}

/** True when both keys have the same type and blob. */
export function sameKey(a: PublicKey, b: PublicKey): boolean {
  if (a.type !== b.type || a.blob.length !== b.blob.length) return false;
  for (let i = 0; i < a.blob.length; i++) if (a.blob[i] !== b.blob[i]) return false;
  return true;
}

function decodeKey(type: string, b64: string): PublicKey | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return undefined;
  const blob = new Uint8Array(Buffer.from(b64, "base64"));
  // The blob repeats the type; a line whose two disagree is corrupt.
  if (blobKeyType(blob) !== type) return undefined;
  return { type, blob };
}

function hashedMatches(field: string, name: string): boolean {
  const parts = field.split("|");
  // "", "1", salt, hash
  if (parts.length !== 4 || parts[1] !== "1" || !parts[2] || !parts[3]) return false;
  const salt = Buffer.from(parts[2], "base64");
  const want = Buffer.from(parts[3], "base64");
  const got = createHmac("sha1", salt).update(name).digest();
  return want.length === got.length && want.equals(got);
}

/** OpenSSH-style glob: `*` any run of characters, `?` one character. */
function globMatches(glob: string, text: string): boolean {
  let g = 0;
  let t = 0;
  let starG = -1;
  let starT = 0;
  while (t < text.length) {
    if (g < glob.length && (glob[g] === "?" || glob[g] === text[t])) {
      g++;
      t++;
    } else if (g < glob.length && glob[g] === "*") {
      starG = g++;
      starT = t;
    } else if (starG >= 0) {
      g = starG + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob[g] === "*") g++;
  return g === glob.length;
}
