/**
 * The environment variables the kubelet gives every container for the
 * Services it may reach (docker links style): for each Service with a
 * cluster IP, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT` (and
 * `<NAME>_SERVICE_PORT_<PORTNAME>` per named port), `<NAME>_PORT` and the
 * `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]` family. NAME is the Service
 * name upper-cased with '-' as '_'. The Services are those of the pod's
 * namespace when `enableServiceLinks` is not false, plus always the
 * `kubernetes` Service of the default namespace (the API server). Pure.
 *
 * On an edge device these addresses are only reachable where something
 * routes cluster IPs to the device (no kube-proxy runs there); the variables
 * are given anyway, as workloads read them (e.g. KUBERNETES_SERVICE_HOST).
 */
import type { V1Service } from "@kubernetes/client-node";

/** Service env for a pod of `namespace`; `services` are the candidates (any namespace). */
export function serviceEnv(
  namespace: string,
  enableServiceLinks: boolean,
  services: V1Service[],
): Record<string, string> {
  const picked = new Map<string, V1Service>();
  // The API server's Service first, so a same-named Service of the pod's namespace wins.
  for (const s of services) {
    if (s.metadata?.namespace === "default" && s.metadata.name === "kubernetes") {
      picked.set("kubernetes", s);
    }
  }
  if (enableServiceLinks) {
    for (const s of services) {
      if (s.metadata?.namespace === namespace && s.metadata.name) picked.set(s.metadata.name, s);
    }
  }
  const env: Record<string, string> = {};
  for (const [name, s] of [...picked].sort(([a], [b]) => a.localeCompare(b))) {
    const ip = s.spec?.clusterIP;
    const ports = s.spec?.ports ?? [];
    if (!ip || ip === "None" || ports.length === 0) continue;
    const prefix = name.toUpperCase().replaceAll("-", "_");
    const host = ip.includes(":") ? `[${ip}]` : ip;
    env[`${prefix}_SERVICE_HOST`] = ip;
    env[`${prefix}_SERVICE_PORT`] = String(ports[0]!.port);
    for (const p of ports) {
      if (p.name) {
        env[`${prefix}_SERVICE_PORT_${p.name.toUpperCase().replaceAll("-", "_")}`] = String(
          p.port,
        );
      }
    }
    const first = ports[0]!;
    env[`${prefix}_PORT`] = `${(first.protocol ?? "TCP").toLowerCase()}://${host}:${first.port}`;
    for (const p of ports) {
      const proto = (p.protocol ?? "TCP").toUpperCase();
      const key = `${prefix}_PORT_${p.port}_${proto}`;
      env[key] = `${proto.toLowerCase()}://${host}:${p.port}`;
      env[`${key}_PROTO`] = proto.toLowerCase();
      env[`${key}_PORT`] = String(p.port);
      env[`${key}_ADDR`] = ip;
    }
  }
  return env;
}
