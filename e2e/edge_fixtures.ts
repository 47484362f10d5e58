/** Waits shared by the tests that connect devices to aranya. */
import { credentialsSecretName } from "@aranya/aranya/edgedevice/types";
import { type ClusterHandle, eventually } from "./fixtures.ts";

/** The device's token from its credentials Secret, once aranya made it (decoded). */
export async function waitDeviceToken(
  cluster: ClusterHandle,
  namespace: string,
  name: string,
  timeoutMs = 60_000,
): Promise<string> {
  const b64 = await eventually(`the credentials Secret of "${namespace}/${name}"`, async () => {
    const r = await cluster.kubectl([
      "get",
      "secret",
      "-n",
      namespace,
      credentialsSecretName(name),
      "-o",
      "jsonpath={.data.token}",
    ]);
    return r.code === 0 && r.stdout ? r.stdout : undefined;
  }, timeoutMs);
  return atob(b64);
}

/** Waits until Node `name`'s Ready condition is `want`; resolves with "<status>/<reason>". */
export async function waitNodeReady(
  cluster: ClusterHandle,
  name: string,
  want: "True" | "False",
  timeoutMs = 60_000,
): Promise<string> {
  return await eventually(`Node "${name}" Ready=${want}`, async () => {
    const r = await cluster.kubectl([
      "get",
      "node",
      name,
      "-o",
      'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}',
    ]);
    return r.code === 0 && r.stdout.startsWith(`${want}/`) ? r.stdout : undefined;
  }, timeoutMs);
}

/** arhat's config for a device on a test engine (fast reconnects); see {@link websocketMethod}. */
export function arhatDeviceYaml(o: {
  namespace: string;
  name: string;
  stateDir: string;
  /** The container engine's socket (Podman or Docker). */
  runtimeSocket: string;
  /** The infra container's image (the local test image). */
  image: string;
  /** `connectivity.methods` items, YAML. */
  methods: string;
  /** Turns on every host management switch. */
  allowHost?: boolean;
  /** The host log folder host management may read (default arhat's, /var/log). */
  hostLogDir?: string;
}): string {
  const logDir = o.hostLogDir ? `, logDir: ${o.hostLogDir}` : "";
  const host = o.allowHost
    ? `host: { allowExec: true, allowAttach: true, allowLogs: true, allowPortForward: true${logDir} }\n`
    : "";
  return `device: { namespace: ${o.namespace}, name: ${o.name} }
stateDir: ${o.stateDir}
runtime: { endpoint: unix://${o.runtimeSocket}, infraImage: ${o.image} }
${host}connectivity:
  backoff: { initialDelay: 200ms, maxDelay: 1s, factor: 1.5 }
  methods:
${o.methods}`;
}

/** One websocket method item for {@link arhatDeviceYaml}: aranya on localhost:`port`. */
export function websocketMethod(port: number, tokenFile: string, caFile: string): string {
  return `    - method: websocket
      url: wss://localhost:${port}/v1/link
      tokenFile: ${tokenFile}
      tls: { caFile: ${caFile} }
`;
}
