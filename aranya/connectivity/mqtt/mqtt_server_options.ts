/**
 * The options of aranya's `MqttLinkServer` from its config
 * (`links.mqtt`): the broker, credentials and TLS files (read here), dynamic
 * security and the keepalive of aranya's own broker connection.
 *
 * @module
 */
import type { DeviceKeyring, LinkRegistry } from "@aranya/common/link";
import type { Logger } from "@aranya/common/log";
import type { MqttLinkConfig } from "../../config.ts";
import type { MqttLinkServerOptions } from "./mqtt_link_server.ts";

/** What the server needs besides its config. */
export interface MqttServerDeps {
  /** The devices' link keys. */
  keys: DeviceKeyring;
  /** Where accepted links are claimed. */
  registry: LinkRegistry;
  log?: Logger;
  /** Reads a file named by the config (default `Deno.readTextFile`). */
  readTextFile?: (path: string) => Promise<string>;
}

/** `MqttLinkServer` options for `config`; reads its password and TLS files. */
export async function mqttLinkServerOptions(
  config: MqttLinkConfig,
  deps: MqttServerDeps,
): Promise<MqttLinkServerOptions> {
  const read = deps.readTextFile ?? ((path: string) => Deno.readTextFile(path));
  const file = (path: string | undefined) => path === undefined ? undefined : read(path);
  return {
    url: config.broker,
    username: config.username,
    password: config.passwordFile ? (await read(config.passwordFile)).trim() : undefined,
    ca: await file(config.tls?.caFile),
    cert: await file(config.tls?.certFile),
    key: await file(config.tls?.keyFile),
    servername: config.tls?.serverName,
    keys: deps.keys,
    registry: deps.registry,
    dynamicSecurity: config.dynamicSecurity,
    keepaliveSeconds: config.keepaliveSeconds,
    log: deps.log,
  };
}
