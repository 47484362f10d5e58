/**
 * The SSH host key policy of the deploy tool: which host keys a device may
 * present (pinned `hostKey`, or known_hosts with @revoked), the host key
 * algorithms to negotiate so a known key type is offered first, and the
 * refusals that say what to check and how to fix it.
 *
 * @module
 */
import { Buffer } from "node:buffer";
// @ts-types="./ssh2.d.ts"
import type { Algorithms, ServerHostKeyAlgorithm } from "ssh2";
import { errorMessage, InvalidInputError, UnauthenticatedError } from "@aranya/common/errors";
import {
  blobKeyType,
  checkHostKey,
  type KnownHostEntry,
  knownHostsName,
  knownKeyTypes,
  parseKnownHosts,
  parsePublicKeyLine,
  type PublicKey,
  sameKey,
  sha256Fingerprint,
} from "./known_hosts.ts";
import type { SshTarget } from "./ssh_remote_host.ts";

/** Host key algorithms ssh2 negotiates for a key type, best first. */
const HOST_KEY_ALGORITHMS: Readonly<Record<string, readonly ServerHostKeyAlgorithm[]>> = {
  "ssh-ed25519": ["ssh-ed25519"],
  "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
  "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
  "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256"],
};

/** The host key check of one connection attempt. */
export interface HostKeyCheck {
  /** ssh2's hostVerifier: true to accept; records why when refusing. */
  verify(blob: Buffer): boolean;
  /** Why the host key was refused, if it was. */
  failure(): Error | undefined;
  /** Host key algorithms preferring the types we can verify, when any are known. */
  algorithms?: Algorithms;
}

/**
 * The host key policy of one connection to `o`: the key or fingerprint `o.hostKey` pins, else the
 * known_hosts file (`o.knownHostsFile`, default ~/.ssh/known_hosts; @revoked entries refuse), as
 * OpenSSH's StrictHostKeyChecking=yes. Unknown, changed and revoked keys are refused, each saying
 * what to check and the command that fixes it.
 *
 * @throws InvalidInputError naming the device when `hostKey` or the file cannot be used.
 */
export async function hostKeyCheck(o: SshTarget, address: string): Promise<HostKeyCheck> {
  let expectedKey: PublicKey | undefined;
  let expectedFingerprint: string | undefined;
  if (o.hostKey !== undefined) {
    const text = o.hostKey.trim();
    if (/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(text)) {
      expectedFingerprint = text.replace(/=$/, "");
    } else {
      expectedKey = parsePublicKeyLine(text);
      if (!expectedKey) {
        throw new InvalidInputError(
          `Host key "${o.hostKey}" for device "${address}" is neither a public key line ` +
            `("ssh-ed25519 AAAA...") nor a fingerprint ("SHA256:..." as ssh-keygen -l prints it)`,
        );
      }
      expectedFingerprint = sha256Fingerprint(expectedKey.blob);
    }
  }
  let file = o.knownHostsFile;
  if (file === undefined && o.hostKey === undefined) {
    const home = Deno.env.get("HOME");
    if (!home) {
      throw new InvalidInputError(
        `Cannot check the host key of device "${address}": neither hostKey nor ` +
          `knownHostsFile is set, and HOME is not set to find ~/.ssh/known_hosts`,
      );
    }
    file = `${home}/.ssh/known_hosts`;
  }
  let entries: KnownHostEntry[] = [];
  let fileMissing = false;
  if (file !== undefined) {
    try {
      entries = parseKnownHosts(await Deno.readTextFile(file));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new InvalidInputError(
          `Cannot read known_hosts file "${file}" for device "${address}": ${errorMessage(err)}`,
          { cause: err },
        );
      }
      fileMissing = true;
    }
  }

  const types = knownKeyTypes(entries, o.host, o.port);
  if (expectedKey && !types.includes(expectedKey.type)) types.unshift(expectedKey.type);
  const preferred = types.flatMap((t) => HOST_KEY_ALGORITHMS[t] ?? []);
  const algorithms: Algorithms | undefined = preferred.length > 0
    // ssh2 applies these in key order: take them out, then put them in front.
    ? { serverHostKey: { remove: preferred, prepend: preferred, append: [] } }
    : undefined;

  let failure: Error | undefined;
  return {
    algorithms,
    failure: () => failure,
    verify(blob: Buffer): boolean {
      const presented: PublicKey = { type: blobKeyType(blob) ?? "unknown", blob };
      const fp = sha256Fingerprint(blob);
      const verdict = checkHostKey(entries, o.host, o.port, presented);
      if (verdict.kind === "revoked") {
        failure = new UnauthenticatedError(
          `Host key of "${address}" (${fp}) is marked @revoked in "${file}" ` +
            `(line ${verdict.line}); refusing to connect`,
        );
        return false;
      }
      const matchesExpected = expectedKey
        ? sameKey(expectedKey, presented)
        : expectedFingerprint !== undefined && expectedFingerprint === fp;
      if (matchesExpected || verdict.kind === "trusted") return true;
      if (expectedFingerprint !== undefined) {
        failure = new UnauthenticatedError(
          `Host key of "${address}" is ${fp} but hostKey expects ${expectedFingerprint}; ` +
            `the device may have been reinstalled, or someone is intercepting the connection: ` +
            `check the device before changing hostKey`,
        );
      } else if (verdict.kind === "mismatch") {
        const name = knownHostsName(o.host, o.port);
        failure = new UnauthenticatedError(
          `Host key of "${address}" (${fp}) does not match the key in "${file}" ` +
            `(${verdict.known.join(", ")}); the device may have been reinstalled, or someone ` +
            `is intercepting the connection: check the device, then remove the old entry with: ` +
            `ssh-keygen -R "${name}" -f ${file}`,
        );
      } else {
        const portArg = o.port === 22 ? "" : `-p ${o.port} `;
        failure = new UnauthenticatedError(
          `Host key of "${address}" (${fp}) is not in "${file}"` +
            `${fileMissing ? " (the file does not exist)" : ""}; check it and add it with: ` +
            `ssh-keyscan ${portArg}${o.host} >> ${file}, or set hostKey`,
        );
      }
      return false;
    },
  };
}
