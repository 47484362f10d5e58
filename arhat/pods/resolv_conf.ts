/**
 * A pod's /etc/resolv.conf, written by arhat as the kubelet writes it: the
 * name servers, search domains and options aranya resolved from the pod's
 * dnsPolicy and dnsConfig and the EdgeDevice's spec.pod.dns, in one file under
 * the pod's folder, bind-mounted read-only into every app container. The
 * engines cannot be asked for it: on the "none" network Podman writes no
 * resolv.conf at all and ignores the DNS options it is given.
 *
 * Nothing is written for hostNetwork pods (they use the device's own file)
 * nor for pods without any DNS setting (the engine's default applies).
 */
import type { PodEnsureCmd } from "@aranya/proto/gen/aranya/pod_pb";
import { podDir } from "./volumes.ts";

/** The file's text for the pod's DNS settings; undefined when there are none. */
export function renderResolvConf(
  pod: Pick<PodEnsureCmd, "dnsServers" | "dnsSearches" | "dnsOptions">,
): string | undefined {
  const servers = pod.dnsServers.filter((s) => s !== "");
  const searches = pod.dnsSearches.filter((s) => s !== "");
  const options = pod.dnsOptions.filter((s) => s !== "");
  if (!servers.length && !searches.length && !options.length) return undefined;
  const lines = servers.map((s) => `nameserver ${s}`);
  if (searches.length) lines.push(`search ${searches.join(" ")}`);
  if (options.length) lines.push(`options ${options.join(" ")}`);
  return lines.join("\n") + "\n";
}

/** Where the pod's resolv.conf is, when it gets one (see {@link podResolvConf}). */
export function resolvConfPath(stateDir: string, uid: string): string {
  return `${podDir(stateDir, uid)}/resolv.conf`;
}

/** The path of the pod's resolv.conf, or undefined when it gets none (see the module doc). */
export function podResolvConf(stateDir: string, pod: PodEnsureCmd): string | undefined {
  return pod.hostNetwork || renderResolvConf(pod) === undefined
    ? undefined
    : resolvConfPath(stateDir, pod.uid);
}

/**
 * Writes the pod's resolv.conf (see the module doc); resolves with its path,
 * or undefined when the pod gets none.
 */
export async function writeResolvConf(
  stateDir: string,
  pod: PodEnsureCmd,
): Promise<string | undefined> {
  const path = podResolvConf(stateDir, pod);
  const text = renderResolvConf(pod);
  if (path === undefined || text === undefined) return undefined;
  await Deno.mkdir(podDir(stateDir, pod.uid), { recursive: true, mode: 0o700 });
  // Rewritten in place (same inode), so a mount made earlier sees the same file.
  await Deno.writeTextFile(path, text, { mode: 0o644 });
  return path;
}
