/**
 * Host prerequisites for the test environment, from Debian's packages only.
 *
 * Idempotent: packages already installed are left alone; missing ones are
 * installed with apt-get when running as root (as CI does), otherwise the
 * error says exactly which command to run. Nothing is downloaded from outside
 * the Debian archive.
 */
import { run } from "./process.ts";

/**
 * What the arm64 device test (e2e/arm64_e2e_test.ts) needs to run Deno's arm64 build here: user
 * emulation and the arm64 C runtime it links (`libc6:arm64` needs `dpkg --add-architecture arm64`,
 * which {@link ensureHostPackages} does first).
 */
export const ARM64_PACKAGES: Readonly<Record<string, string>> = {
  "qemu-user-static": "qemu-aarch64-static, which runs the arm64 Deno for the arm64 device test",
  "libc6:arm64": "the arm64 C library the arm64 Deno links (run under qemu-aarch64-static)",
  "libgcc-s1:arm64": "the arm64 libgcc_s the arm64 Deno links (run under qemu-aarch64-static)",
};

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
  "util-linux":
    "setpriv, so services die with the test harness; unshare and nsenter, the worker node's namespace",
  "containerd": "the worker node's container runtime (its CRI plugin), beside the pinned kubelet",
  "containernetworking-plugins":
    "the worker node's pod network: the CNI bridge, host-local and loopback plugins",
  "iproute2": "ip, to create and delete the worker node's bridge",
  "iptables": "the rules kube-proxy writes for Services (the in-cluster aranya e2e)",
  "procps": "ps, to watch service processes",
  "tcpdump": "bench: idle bytes on the wire",
  "tar": "packing the test image's rootfs",
  "openssh-server": "sshd, the SSH server deploy tests install arhat through",
  ...ARM64_PACKAGES,
};

/** dpkg's foreign architectures (`dpkg --add-architecture`) that `names` need (`pkg:arch`). */
export function foreignArchitectures(names: string[], native: string): string[] {
  const arches = names.map((n) => /^[^:]+:([a-z0-9-]+)$/.exec(n)?.[1])
    .filter((a): a is string => a !== undefined && a !== native && a !== "all");
  return [...new Set(arches)].sort();
}

async function dpkgOutput(args: string[]): Promise<string> {
  const out = await new Deno.Command("dpkg", { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(
      `Command "dpkg ${args.join(" ")}" failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/**
 * The architectures `missing` needs that dpkg does not know yet (added with
 * `dpkg --add-architecture` before apt-get update).
 */
async function architecturesToAdd(missing: string[]): Promise<string[]> {
  const wanted = foreignArchitectures(missing, await dpkgOutput(["--print-architecture"]));
  if (wanted.length === 0) return [];
  const known = (await dpkgOutput(["--print-foreign-architectures"])).split(/\s+/);
  return wanted.filter((a) => !known.includes(a));
}

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

/**
 * Installs whatever of `packages` (default {@link HOST_PACKAGES}) is missing; a package of another
 * architecture (`name:arch`) gets its architecture added to dpkg first.
 */
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
  const arches = await architecturesToAdd(missing);
  if (Deno.uid() !== 0) {
    const add = arches.map((a) => `dpkg --add-architecture ${a} && `).join("");
    throw new Error(
      `Missing Debian packages ${missing.map((m) => `"${m}"`).join(", ")}; ` +
        `run as root: ${add}apt-get update && ${cmd}`,
    );
  }
  for (const a of arches) {
    log(`adding the Debian architecture "${a}" (dpkg --add-architecture)`);
    await run("dpkg", ["--add-architecture", a]);
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
