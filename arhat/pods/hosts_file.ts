/**
 * A pod's /etc/hosts, written by arhat as the kubelet writes it and
 * bind-mounted into every app and init container (unless the pod mounts
 * something at /etc/hosts itself):
 *
 * - pods on the pod network: the kubelet's header "# Kubernetes-managed hosts
 *   file.", the loopback and IPv6 entries, the pod IP with the pod's
 *   hostname, then the pod's hostAliases;
 * - hostNetwork pods: the header "# Kubernetes-managed hosts file (host
 *   network).", the device's own /etc/hosts, then the hostAliases.
 *
 * The file is rewritten in place (same inode), so containers that mounted it
 * earlier see the current content.
 */
import type { PodEnsureCmd } from "@aranya/proto/gen/aranya/pod_pb";
import { podDir } from "./volumes.ts";

const MANAGED = "# Kubernetes-managed hosts file.";
const MANAGED_HOST = "# Kubernetes-managed hosts file (host network).";

/** The file's text; `deviceHosts` is the device's /etc/hosts (hostNetwork pods). */
export function renderHostsFile(
  pod: Pick<PodEnsureCmd, "hostNetwork" | "hostname" | "name" | "hosts">,
  podIp: string,
  deviceHosts = "",
): string {
  const lines: string[] = [];
  if (pod.hostNetwork) {
    lines.push(MANAGED_HOST, deviceHosts.trimEnd());
  } else {
    lines.push(
      MANAGED,
      "127.0.0.1\tlocalhost",
      "::1\tlocalhost ip6-localhost ip6-loopback",
      "fe00::0\tip6-localnet",
      "fe00::0\tip6-mcastprefix",
      "fe00::1\tip6-allnodes",
      "fe00::2\tip6-allrouters",
    );
    if (podIp) lines.push(`${podIp}\t${pod.hostname || pod.name}`);
  }
  // hosts: hostname -> IP; the kubelet writes one line per alias IP with its names.
  const byIp = new Map<string, string[]>();
  for (const [host, ip] of Object.entries(pod.hosts)) byIp.set(ip, [...byIp.get(ip) ?? [], host]);
  if (byIp.size) {
    lines.push("", "# Entries added by HostAliases.");
    for (const [ip, hosts] of byIp) lines.push(`${ip}\t${hosts.join("\t")}`);
  }
  return lines.join("\n") + "\n";
}

/** Where the pod's hosts file lives. */
export function hostsFilePath(stateDir: string, uid: string): string {
  return `${podDir(stateDir, uid)}/hosts`;
}

/** Writes the pod's hosts file (see the module doc); resolves with its path. */
export async function writeHostsFile(
  stateDir: string,
  pod: PodEnsureCmd,
  podIp: string,
): Promise<string> {
  const deviceHosts = pod.hostNetwork
    ? await Deno.readTextFile("/etc/hosts").catch(() => "127.0.0.1\tlocalhost\n")
    : "";
  const path = hostsFilePath(stateDir, pod.uid);
  await Deno.mkdir(podDir(stateDir, pod.uid), { recursive: true, mode: 0o700 });
  const text = renderHostsFile(pod, podIp, deviceHosts);
  const now = await Deno.readTextFile(path).catch(() => undefined);
  if (now !== text) await Deno.writeTextFile(path, text, { mode: 0o644 });
  return path;
}
