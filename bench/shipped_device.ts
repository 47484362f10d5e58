/**
 * One edge device for the benches that measure what we ship: an EdgeDevice
 * in the world's namespace and the shipped arhat bundle dialing the real
 * aranya over one transport; {@link shippedDeviceReady} waits for its Node.
 *
 * @module
 */
import type { World } from "@aranya/e2e/edge_world";
import { arhatDeviceYaml, websocketMethod } from "@aranya/e2e/edge_fixtures";
import type { ServiceProcess } from "@aranya/e2e/process";
import type { Broker } from "@aranya/e2e/services/mosquitto";
import type { LinkTransport } from "./link_active.ts";
import type { ShippedArhatBundle } from "./shipped_arhat.ts";

/** Options of {@link startShippedDevice}. */
export interface ShippedDeviceOptions {
  transport: LinkTransport;
  /** The EdgeDevice's (and Node's) name. */
  name: string;
  /** aranya's websocket and gRPC link ports. */
  websocketPort: number;
  grpcPort: number;
  /** The broker, for the mqtt transport. */
  broker?: Broker;
  /** A keepalive interval other than the transport's default, seconds (shortened windows). */
  keepaliveSeconds?: number;
  /** The EdgeDevice's `spec.pod.allocatable` (pods), when the CRD's default of 10 is too few. */
  podAllocatable?: number;
}

/** A started device. */
export interface ShippedDevice {
  transport: LinkTransport;
  name: string;
  /** Its folder (token, CA, config, state). */
  dir: string;
  proc: ServiceProcess;
}

/**
 * Creates the EdgeDevice, writes the device's token, CA and config and starts
 * the bundle. The caller stops `proc` and removes `dir`.
 */
export async function startShippedDevice(
  w: World,
  bundle: ShippedArhatBundle,
  o: ShippedDeviceOptions,
): Promise<ShippedDevice> {
  const ns = `aranya/${w.ns}/${o.name}`;
  const ka = o.keepaliveSeconds;
  const connectivity: Record<string, unknown> | undefined = o.transport === "websocket"
    ? undefined
    : o.transport === "grpc"
    ? { method: "grpc" }
    : { method: "mqtt", mqttConfig: { messageNamespace: ns } };
  const timers = ka && o.transport !== "mqtt" ? { timers: { keepaliveInterval: `${ka}s` } } : {};
  const spec: Record<string, unknown> = {
    ...(o.podAllocatable ? { pod: { allocatable: o.podAllocatable } } : {}),
    ...(connectivity || ka ? { connectivity: { ...connectivity, ...timers } } : {}),
  };
  const tokenAt = await w.createDevice(o.name, spec);
  const dir = await bundle.deviceDir(o.name);
  await Deno.writeTextFile(`${dir}/token`, await Deno.readTextFile(tokenAt), { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/ca.crt`, w.tls.ca);
  const methods = o.transport === "websocket"
    ? websocketMethod(o.websocketPort, `${dir}/token`, `${dir}/ca.crt`)
    : o.transport === "grpc"
    ? `    - method: grpc\n      target: localhost:${o.grpcPort}\n      tokenFile: ${dir}/token\n` +
      `      tls: { caFile: ${dir}/ca.crt }\n`
    : `    - method: mqtt\n      broker: mqtt://${o.broker!.address}\n      insecure: true\n` +
      `      tokenFile: ${dir}/token\n      mqtt: { messageNamespace: ${ns}${
        ka ? `, keepaliveSeconds: ${ka}` : ""
      } }\n`;
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    arhatDeviceYaml({
      namespace: w.ns,
      name: o.name,
      stateDir: `${dir}/state`,
      runtimeSocket: w.runtimeSocket,
      image: w.services.endpoints.testImage,
      methods,
    }),
  );
  return {
    transport: o.transport,
    name: o.name,
    dir,
    proc: await bundle.spawn(o.name, `${dir}/config.yaml`),
  };
}

/**
 * Waits for the device's Node to be Ready (`timeoutMs`, default 2 minutes); the error carries the
 * end of arhat's log.
 */
export async function shippedDeviceReady(
  w: World,
  d: ShippedDevice,
  timeoutMs = 120_000,
): Promise<void> {
  await w.nodeReady(d.name, "True", timeoutMs).catch(async (err) => {
    throw new Error(
      `${d.transport}: ${(err as Error).message}; arhat's log:\n${
        (await Deno.readTextFile(d.proc.logFile).catch(() => "")).slice(-3000)
      }`,
    );
  });
}
