/**
 * The {@link DeviceAuthenticator} aranya runs: a device "<namespace>/<name>"
 * is accepted only while EdgeDevice "<namespace>/<name>" exists (asked of the
 * EdgeDevice cache: an unknown name costs no API request), and only with
 * credentials that EdgeDevice owns:
 *
 * - a token equal to the one in Secret "<name>-arhat-credentials" of its
 *   namespace, and only when that Secret is controlled by the EdgeDevice (an
 *   owner reference with its uid): a Secret that merely has the right name is
 *   not enough;
 * - or a client certificate that the listener verified against the device CA
 *   configured in aranya, whose subject CN is exactly "<namespace>/<name>".
 *
 * It is also the {@link DeviceKeyring} of the MQTT transport: the device's
 * link key is derived from the same token, under the same checks.
 *
 * A device that dials while its EdgeDevice is known but the caches have not
 * caught up with the rest of it yet (`pending`: its Node is not seen yet, as
 * when a fleet is provisioned and dials at once) is held for up to `pendingMs`
 * until `devices` knows it, instead of being refused into a redial; at most
 * `maxPending` such dials wait at once.
 *
 * Bounded against floods: tokens are cached per device (digests only, up to
 * `maxEntries`), a wrong token is remembered by its digest for `negativeMs`,
 * one Secret read serves concurrent dials of a device, and a device's Secret
 * is re-read (a rotated token) at most once per `refreshMs`. Reads go through
 * the client the caller passes: aranya gives it its own rate limit, so a flood
 * never delays Lease renewals.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Buffer } from "node:buffer";
import type { CoreApi } from "../kube/apis.ts";
import { UnauthenticatedError, UnavailableError } from "@aranya/common/errors";
import type { DeviceAuthenticator, DeviceCredentials, DeviceKeyring } from "@aranya/common/link";
import { linkKey } from "@aranya/common/mqtt_seal";
import { type Logger, nullLogger } from "@aranya/common/log";
import { setBounded } from "@aranya/common/bounded_map";
import { isNotFound } from "../kube/errors.ts";
import { credentialsSecretName, type EdgeDevice, ownedBy } from "../edgedevice/types.ts";
import { decodeBase64Text } from "@aranya/common/base64";

/** Options for {@link SecretAuthenticator}. */
export interface SecretAuthenticatorOptions {
  /** Reads the credentials Secrets (give it a rate limit of its own). */
  core: CoreApi;
  /** The EdgeDevice "<namespace>/<name>" if it exists, from a cache (no I/O). */
  devices: (key: string) => EdgeDevice | undefined;
  /** True while the device is known but `devices` cannot answer yet (no I/O). */
  pending?: (key: string) => boolean;
  /** Longest wait for a pending device, ms (default 5 s). */
  pendingMs?: number;
  /** Most dials waiting at once (default 1024; more are refused at once). */
  maxPending?: number;
  /** How long a token read from the API is reused, ms (default 30 s). */
  cacheMs?: number;
  /** How long a wrong token is refused without a read, ms (default 30 s). */
  negativeMs?: number;
  /** Shortest time between two reads of one device's Secret, ms (default 5 s). */
  refreshMs?: number;
  /** Most devices and wrong tokens remembered, each (default 10 000; oldest dropped). */
  maxEntries?: number;
  log?: Logger;
}

interface Entry {
  /** The EdgeDevice uid the Secret was checked against. */
  uid: string;
  /** SHA-256 of the token; absent: no usable Secret. */
  digest?: Buffer;
  /** The MQTT link key derived from the token. */
  key?: Uint8Array;
  readAt: number;
}

/** Authenticates devices against their EdgeDevice and its credentials. */
export class SecretAuthenticator implements DeviceAuthenticator, DeviceKeyring {
  readonly #o: SecretAuthenticatorOptions;
  readonly #log: Logger;
  readonly #tokens = new Map<string, Entry>();
  readonly #wrong = new Map<string, number>();
  readonly #reading = new Map<string, Promise<Entry>>();
  #waiting = 0;

  constructor(opts: SecretAuthenticatorOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
  }

  /**
   * Remembers the token this replica just wrote into the device's credentials
   * Secret (owned by EdgeDevice `uid`), so the device's first dial costs no
   * read. Its Secret is read as usual once this entry is stale.
   */
  prime(device: string, uid: string, token: string): void {
    const entry: Entry = { uid, readAt: Date.now(), digest: sha256(token), key: linkKey(token) };
    setBounded(this.#tokens, device, entry, this.#max);
  }

  /** Drops what is cached for `device` (call when the device was removed). */
  forget(device: string): void {
    this.#tokens.delete(device);
  }

  /** Number of remembered entries (devices and wrong tokens), for tests and metrics. */
  get cached(): number {
    return this.#tokens.size + this.#wrong.size;
  }

  async authenticate(device: string, credentials: DeviceCredentials): Promise<void> {
    const refuse = () =>
      new UnauthenticatedError(`Device "${device}" presented no valid credentials`);
    const uid = this.#uid(device) ?? await this.#settled(device);
    if (!uid) throw refuse();
    // A certificate the listener verified against the device CA names the device exactly.
    if (credentials.certificateCN !== undefined && credentials.certificateCN === device) return;
    const token = credentials.token;
    if (!token) throw refuse();
    const digest = sha256(token);
    const wrongKey = `${device}\u0000${digest.toString("hex")}`;
    if ((this.#wrong.get(wrongKey) ?? 0) > Date.now()) throw refuse();
    const matches = (e: Entry) => e.digest !== undefined && timingSafeEqual(e.digest, digest);
    // A wrong token may be a rotated one: the second look reads again (at most once per
    // refresh interval).
    if (matches(await this.#entry(device, uid)) || matches(await this.#entry(device, uid, true))) {
      return;
    }
    setBounded(this.#wrong, wrongKey, Date.now() + (this.#o.negativeMs ?? 30_000), this.#max);
    throw refuse();
  }

  async linkKey(device: string, opts: { fresh?: boolean } = {}): Promise<Uint8Array | undefined> {
    const uid = this.#uid(device);
    return uid ? (await this.#entry(device, uid, opts.fresh)).key : undefined;
  }

  /** Waits (bounded) while the device is pending; then its uid, if it is known by then. */
  async #settled(device: string): Promise<string | undefined> {
    const max = this.#o.maxPending ?? 1024;
    if (!this.#o.pending?.(device) || this.#waiting >= max) return undefined;
    this.#waiting++;
    try {
      const until = Date.now() + (this.#o.pendingMs ?? 5_000);
      while (Date.now() < until && this.#o.pending(device)) {
        await new Promise((r) => setTimeout(r, 100));
      }
      return this.#uid(device);
    } finally {
      this.#waiting--;
    }
  }

  /** The uid of the device's EdgeDevice, when it exists and is not being deleted. */
  #uid(device: string): string | undefined {
    const ed = this.#o.devices(device);
    return ed?.metadata?.deletionTimestamp ? undefined : ed?.metadata?.uid;
  }

  /**
   * The device's cached credentials, read again when missing, stale, of another
   * EdgeDevice uid, or (`fresh`) older than the refresh interval.
   */
  async #entry(device: string, uid: string, fresh = false): Promise<Entry> {
    const e = this.#tokens.get(device);
    const age = e ? Date.now() - e.readAt : Infinity;
    if (
      !e || e.uid !== uid || age > (this.#o.cacheMs ?? 30_000) ||
      (fresh && age >= (this.#o.refreshMs ?? 5_000))
    ) return await this.#read(device, uid);
    return e;
  }

  get #max(): number {
    return this.#o.maxEntries ?? 10_000;
  }

  /** One read of the device's Secret at a time; concurrent dials share it. */
  #read(device: string, uid: string): Promise<Entry> {
    const running = this.#reading.get(device);
    if (running) return running;
    const p = this.#readSecret(device, uid).finally(() => this.#reading.delete(device));
    this.#reading.set(device, p);
    return p;
  }

  async #readSecret(device: string, uid: string): Promise<Entry> {
    const slash = device.indexOf("/");
    const namespace = device.slice(0, slash);
    const name = device.slice(slash + 1);
    const entry: Entry = { uid, readAt: Date.now() };
    try {
      const s = await this.#o.core.readNamespacedSecret({
        name: credentialsSecretName(name),
        namespace,
      });
      if (!ownedBy(s.metadata, uid)) {
        this.#log.warn("credentials Secret is not owned by the EdgeDevice; refusing its token", {
          device,
          secret: `${namespace}/${credentialsSecretName(name)}`,
        });
      } else if (s.data?.token) {
        const token = decodeBase64Text(
          s.data.token,
          `The token of Secret "${namespace}/${credentialsSecretName(name)}"`,
        );
        entry.digest = sha256(token);
        entry.key = linkKey(token);
      }
    } catch (err) {
      if (!isNotFound(err)) {
        throw new UnavailableError(`Cannot read the credentials of device "${device}" now`, {
          cause: err,
        });
      }
    }
    setBounded(this.#tokens, device, entry, this.#max);
    return entry;
  }
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}
