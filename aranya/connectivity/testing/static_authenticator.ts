/**
 * A test double: a {@link DeviceAuthenticator} over a fixed map of device ->
 * token, for tests of the transports (aranya runs secret_authenticator.ts). A
 * verified client certificate whose CN is exactly the device also passes.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { UnauthenticatedError } from "@aranya/common/errors";
import type { DeviceAuthenticator, DeviceCredentials, DeviceKeyring } from "@aranya/common/link";
import { linkKey } from "@aranya/common/mqtt_seal";

/**
 * Timing-safe comparison of two strings: their SHA-256 digests (equal lengths, as
 * `timingSafeEqual` needs) compared by the platform.
 */
function constantTimeEqual(a: string, b: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(a), digest(b));
}

/** Authenticates devices against tokens (and client-certificate CNs) held in memory. */
export class StaticAuthenticator implements DeviceAuthenticator, DeviceKeyring {
  readonly #tokens = new Map<string, string>();

  /** Sets (or replaces) a device's token. */
  setToken(device: string, token: string): void {
    this.#tokens.set(device, token);
  }

  /** Forgets a device. */
  remove(device: string): void {
    this.#tokens.delete(device);
  }

  linkKey(device: string): Promise<Uint8Array | undefined> {
    const token = this.#tokens.get(device);
    return Promise.resolve(token === undefined ? undefined : linkKey(token));
  }

  authenticate(device: string, credentials: DeviceCredentials): Promise<void> {
    const want = this.#tokens.get(device);
    if (want !== undefined) {
      if (credentials.token !== undefined && constantTimeEqual(credentials.token, want)) {
        return Promise.resolve();
      }
      // A verified client certificate issued for this device also proves it.
      if (credentials.certificateCN !== undefined && credentials.certificateCN === device) {
        return Promise.resolve();
      }
    }
    return Promise.reject(
      new UnauthenticatedError(`Device "${device}" presented no valid credentials`),
    );
  }
}
