/**
 * aranya's device listeners from its config (`links`): one factory, so the
 * wiring in main.ts does not know each transport's options. Reads the TLS,
 * password and CA files the config names; opens nothing (each server listens
 * in its own `run`).
 *
 * @module
 */
import type {
  DeviceAuthenticator,
  DeviceKeyring,
  LinkRegistry,
  LinkServer,
} from "@aranya/common/link";
import type { Logger } from "@aranya/common/log";
import type { AranyaConfig, ServerTlsFiles } from "../config.ts";
import { WebSocketLinkServer } from "./websocket/ws_link_server.ts";
import { GrpcLinkServer } from "./grpc/grpc_link_server.ts";
import { MqttLinkServer } from "./mqtt/mqtt_link_server.ts";
import { mqttLinkServerOptions } from "./mqtt/mqtt_server_options.ts";

/** What the link servers share besides their config. */
export interface LinkServerDeps {
  /** Checks a dialing device's credentials (websocket, gRPC) and holds its link keys (MQTT). */
  authenticator: DeviceAuthenticator & DeviceKeyring;
  /** Where accepted links are claimed (one link per device). */
  registry: LinkRegistry;
  /** A device's own keepalive interval, ms (its EdgeDevice's timers); undefined: the config's. */
  keepaliveFor: (device: string) => number | undefined;
  log?: Logger;
  /** Reads a file named by the config (default `Deno.readTextFile`). */
  readTextFile?: (path: string) => Promise<string>;
}

/** The configured link servers; `mqtt` also in `servers`, apart for its per-device topics. */
export interface LinkServers {
  servers: LinkServer[];
  /** The websocket listener (its bound port is logged). */
  websocket?: WebSocketLinkServer;
  /** The MQTT broker connection, which subscribes each MQTT device's topics. */
  mqtt?: MqttLinkServer;
}

/** Builds one server per configured transport in `links`. */
export async function createLinkServers(
  links: AranyaConfig["links"],
  deps: LinkServerDeps,
): Promise<LinkServers> {
  const read = deps.readTextFile ?? ((path: string) => Deno.readTextFile(path));
  /** A listener's PEM material (client certificates asked for when a CA is set). */
  const serverTls = async (files: ServerTlsFiles | undefined) =>
    files && {
      cert: await read(files.certFile),
      key: await read(files.keyFile),
      ca: files.clientCaFile ? await read(files.clientCaFile) : undefined,
      requestCert: files.clientCaFile !== undefined,
    };
  const common = {
    authenticator: deps.authenticator,
    registry: deps.registry,
    keepaliveFor: deps.keepaliveFor,
    log: deps.log,
  };
  const out: LinkServers = { servers: [] };
  if (links.websocket) {
    const w = links.websocket;
    out.websocket = new WebSocketLinkServer({
      ...common,
      hostname: w.listen.hostname,
      port: w.listen.port,
      path: w.path,
      keepaliveMs: w.keepaliveMs,
      tls: await serverTls(w.tls),
    });
    out.servers.push(out.websocket);
  }
  if (links.grpc) {
    const g = links.grpc;
    out.servers.push(
      new GrpcLinkServer({
        ...common,
        hostname: g.listen.hostname,
        port: g.listen.port,
        keepaliveMs: g.keepaliveMs,
        tls: await serverTls(g.tls),
      }),
    );
  }
  if (links.mqtt) {
    out.mqtt = new MqttLinkServer(
      await mqttLinkServerOptions(links.mqtt, {
        keys: deps.authenticator,
        registry: deps.registry,
        log: deps.log,
        readTextFile: read,
      }),
    );
    out.servers.push(out.mqtt);
  }
  return out;
}
