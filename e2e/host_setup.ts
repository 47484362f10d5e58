/**
 * Host prerequisites for the test environment, from Debian's packages only.
 *
 * Idempotent: packages already installed are left alone; missing ones are
 * installed with apt-get when running as root (as CI does), otherwise the
 * error says exactly which command to run. Nothing is downloaded from outside
 * the Debian archive.
 */
import { run } from "./process.ts";

/** Debian package -> why we need it. */
export const HOST_PACKAGES: Readonly<Record<string, string>> = {
  "podman": "container runtime under test (its Docker-compatible API)",
  "runc": "OCI runtime for Podman and dockerd",
  "conmon": "Podman's container monitor",
  "docker.io": "dockerd, the other container runtime under test",
  "mosquitto": "the MQTT broker for the mqtt transport",
  "docker-registry": "a local image registry with basic auth",
  "apache2-utils": "htpasswd, to make the registry's bcrypt password file",
  "busybox-static": "the rootfs of the local test image",
  "netcat-openbsd": "the nc of the conformance agnhost image (UDP, as upstream's)",
  "protobuf-compiler": "protoc, to generate proto/gen/",
  "openssl": "PKI for the local control plane",
  "util-linux": "setpriv, so services die with the test harness",
  "procps": "ps, to watch service processes",
  "tcpdump": "bench: idle bytes on the wire",
  "tar": "packing the test image's rootfs",
  "openssh-server": "sshd, the SSH server deploy tests install arhat through",
};

async function missingPackages(names: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const name of names) {
    const out = await new Deno.Command("dpkg-query", {
      args: ["-W", "-f=${Status}", name],
      stdout: "piped",
      stderr: "null",
    }).output();
    const status = new TextDecoder().decode(out.stdout);
    if (!out.success || !status.includes("install ok installed")) missing.push(name);
  }
  return missing;
}

/** Installs whatever of `packages` (default {@link HOST_PACKAGES}) is missing. */
export async function ensureHostPackages(
  log: (line: string) => void,
  packages: Readonly<Record<string, string>> = HOST_PACKAGES,
): Promise<void> {
  const missing = await missingPackages(Object.keys(packages));
  if (missing.length === 0) {
    log("host packages: all present");
    return;
  }
  const cmd = `apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  if (Deno.uid() !== 0) {
    throw new Error(
      `Missing Debian packages ${missing.map((m) => `"${m}"`).join(", ")}; ` +
        `run as root: apt-get update && ${cmd}`,
    );
  }
  log(`installing Debian packages: ${missing.join(", ")}`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run("apt-get", ["update", "-q"], { env });
  await run("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { env });
  const still = await missingPackages(missing);
  if (still.length > 0) {
    throw new Error(`apt-get did not install ${still.map((m) => `"${m}"`).join(", ")}`);
  }
}
