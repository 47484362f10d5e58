/**
 * arhat's config for one device of the inventory, and the EdgeDevice that goes with it.
 *
 * The config names files under /etc/arhat that the deployer writes beside it: the device token
 * (from the credentials Secret aranya made) and the CA bundle that verifies aranya or the broker.
 * Rendering is pure: the same inputs give the same bytes, so a re-run finds nothing to copy.
 *
 * @module
 */
import { stringify } from "yaml";
import { API_VERSION, KIND } from "@aranya/aranya/edgedevice/types";
import type { DeviceEntry, Links } from "./inventory.ts";

/** Where the deployer puts arhat's files on a device. */
export const DEVICE_PATHS = Object.freeze({
  /** The program (compiled binary, or the launcher script). */
  bin: "/usr/local/bin/arhat",
  /** The launcher's runtime: deno, the bundle and its permission set. */
  libDir: "/usr/local/lib/arhat",
  configDir: "/etc/arhat",
  config: "/etc/arhat/config.yaml",
  token: "/etc/arhat/token",
  ca: "/etc/arhat/ca.crt",
  stateDir: "/var/lib/arhat",
  unit: "/etc/systemd/system/arhat.service",
  /** Without systemd: the pid and log of the arhat the deployer started. */
  pidFile: "/var/lib/arhat/arhat.pid",
  logFile: "/var/log/arhat.log",
});

/** The MQTT topic prefix of a device (also its EdgeDevice's messageNamespace). */
export function messageNamespace(d: Pick<DeviceEntry, "namespace" | "name">): string {
  return `/aranya.arhat.dev/${d.namespace}/${d.name}`;
}

/** The EdgeDevice object for `d` (applied with server-side apply; only fields the inventory owns). */
export function edgeDeviceObject(d: DeviceEntry): Record<string, unknown> {
  const connectivity: Record<string, unknown> = { method: d.connectivity };
  if (d.connectivity === "grpc") connectivity.grpcConfig = {};
  if (d.connectivity === "mqtt") {
    connectivity.mqttConfig = { messageNamespace: messageNamespace(d) };
  }
  const spec: Record<string, unknown> = { connectivity };
  if (Object.keys(d.labels).length > 0) spec.node = { labels: d.labels };
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name: d.name, namespace: d.namespace },
    spec,
  };
}

/** Inputs of {@link arhatConfigYaml}. */
export interface ArhatConfigInput {
  device: DeviceEntry;
  links: Links;
  /** Whether a CA bundle is installed at {@link DEVICE_PATHS.ca}. */
  withCa: boolean;
}

/** arhat's config.yaml for a device (see deploy/arhat/config.sample.yaml for every field). */
export function arhatConfigYaml(i: ArhatConfigInput): string {
  const d = i.device;
  const tls = i.withCa ? { tls: { caFile: DEVICE_PATHS.ca } } : {};
  // What the method dials; the token and the CA are the same for every method.
  const target = d.connectivity === "websocket"
    ? { url: i.links.websocket?.url }
    : d.connectivity === "grpc"
    ? { target: i.links.grpc?.target }
    : { broker: i.links.mqtt?.broker, mqtt: { messageNamespace: messageNamespace(d) } };
  const insecure = i.links[d.connectivity]?.insecure ? { insecure: true } : {};
  const method = {
    method: d.connectivity,
    ...target,
    tokenFile: DEVICE_PATHS.token,
    ...(insecure.insecure ? {} : tls),
    ...insecure,
  };
  const host = Object.values(d.hostManagement).some((v) => v) ? { host: d.hostManagement } : {};
  const config = {
    device: { namespace: d.namespace, name: d.name },
    stateDir: DEVICE_PATHS.stateDir,
    runtime: {
      endpoint: d.runtimeEndpoint,
      ...(d.infraImage ? { infraImage: d.infraImage } : {}),
    },
    ...host,
    connectivity: { methods: [method] },
  };
  return `# Written by "deno task deploy" from the inventory; a re-run overwrites local edits.\n` +
    stringify(config, { lineWidth: 0 });
}
