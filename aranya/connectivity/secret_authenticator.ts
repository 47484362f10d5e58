/**
 * A DeviceAuthenticator backed by the credentials Secrets the EdgeDevice
 * controller creates: a device "<namespace>/<name>" proves itself with the
 * token in Secret "<namespace>/<name>-arhat-credentials". Tokens are cached
 * briefly so a reconnect storm does not become an API storm.
 */
import type { CoreV1Api } from "@kubernetes/client-node";
import { UnauthenticatedError, UnavailableError } from "../../common/errors.ts";
import type { DeviceAuthenticator, DeviceCredentials } from "../../common/link.ts";
import { isNotFound } from "../kube/errors.ts";
import { credentialsSecretName } from "../edgedevice/types.ts";
import { constantTimeEqual } from "./static_authenticator.ts";

/** Options for {@link SecretAuthenticator}. */
export interface SecretAuthenticatorOptions {
  core: CoreV1Api;
  /** How long a token read from the API is reused, ms (default 30 s). */
  cacheMs?: number;
}

/** Authenticates devices against their credentials Secrets. */
export class SecretAuthenticator implements DeviceAuthenticator {
  readonly #o: SecretAuthenticatorOptions;
  readonly #cache = new Map<string, { token: string | undefined; until: number }>();

  constructor(opts: SecretAuthenticatorOptions) {
    this.#o = opts;
  }

  async #token(device: string): Promise<string | undefined> {
    const hit = this.#cache.get(device);
    if (hit && hit.until > Date.now()) return hit.token;
    const [namespace, name] = device.split("/") as [string, string];
    let token: string | undefined;
    try {
      const s = await this.#o.core.readNamespacedSecret({
        name: credentialsSecretName(name),
        namespace,
      });
      const b64 = s.data?.token;
      token = b64
        ? new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))
        : undefined;
    } catch (err) {
      if (!isNotFound(err)) {
        throw new UnavailableError(`Cannot read the credentials of device "${device}" now`, {
          cause: err,
        });
      }
    }
    // "No such device" is kept briefly only: its Secret may be about to appear.
    const ttl = this.#o.cacheMs ?? 30_000;
    this.#cache.set(device, {
      token,
      until: Date.now() + (token === undefined ? Math.min(ttl, 2_000) : ttl),
    });
    return token;
  }

  /** Drops what is cached for `device` (call when the device was removed). */
  forget(device: string): void {
    this.#cache.delete(device);
  }

  async authenticate(device: string, credentials: DeviceCredentials): Promise<void> {
    const given = credentials.token;
    // A wrong token may be a rotated one: the second round reads the Secret again.
    for (const fresh of [false, true]) {
      if (fresh) this.#cache.delete(device);
      const want = await this.#token(device);
      // No Secret (a deleted or unknown device, cached as such): no second read, so a device
      // that keeps dialing does not cost an API request each time.
      if (want === undefined && !fresh) break;
      if (want !== undefined && given !== undefined && constantTimeEqual(given, want)) return;
    }
    throw new UnauthenticatedError(`Device "${device}" presented no valid credentials`);
  }
}
