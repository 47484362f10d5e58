/**
 * Turns arhat's connectivity config into LinkDialers. Token and TLS files
 * are read at every dial, so a rotated token or certificate is picked up on
 * the next reconnect without restarting arhat.
 */
import { InvalidInputError } from "@aranya/common/errors";
import type { Link, LinkDialer } from "@aranya/common/link";
import type { Logger } from "@aranya/common/log";
import type { ConnectivityMethodConfig, TlsFiles } from "../config.ts";

async function readIf(path: string | undefined): Promise<string | undefined> {
  return path === undefined ? undefined : await Deno.readTextFile(path);
}

async function token(m: ConnectivityMethodConfig): Promise<string | undefined> {
  if (m.token !== undefined) return m.token;
  const t = (await readIf(m.tokenFile))?.trim();
  if (m.tokenFile !== undefined && !t) {
    throw new InvalidInputError(`Token file "${m.tokenFile}" is empty`);
  }
  return t;
}

async function tlsPem(t: TlsFiles | undefined) {
  if (!t) return undefined;
  return {
    ca: await readIf(t.caFile),
    cert: await readIf(t.certFile),
    key: await readIf(t.keyFile),
    serverName: t.serverName,
  };
}

/** A dialer for one configured method of `device` ("<namespace>/<name>"). */
export function dialerFor(device: string, m: ConnectivityMethodConfig, log: Logger): LinkDialer {
  if (m.insecure) {
    log.warn("plaintext link allowed (insecure: true): the token and pod Secrets travel in clear", {
      method: m.method,
    });
  }
  return {
    transport: m.method,
    async dial(signal: AbortSignal): Promise<Link> {
      const tok = await token(m);
      const tls = await tlsPem(m.tls);
      const timeout = AbortSignal.any([signal, AbortSignal.timeout(m.dialTimeoutMs)]);
      switch (m.method) {
        case "websocket": {
          const { WebSocketLinkDialer } = await import("./websocket/ws_link_dialer.ts");
          return await new WebSocketLinkDialer({
            url: m.url,
            device,
            token: tok,
            tls: tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : undefined,
            connectTimeoutMs: m.dialTimeoutMs,
          }).dial(timeout);
        }
        case "mqtt": {
          const { MqttLinkDialer } = await import("./mqtt/mqtt_link_dialer.ts");
          return await new MqttLinkDialer({
            url: m.broker,
            ca: tls?.ca,
            cert: tls?.cert,
            key: tls?.key,
            servername: tls?.serverName,
            device,
            messageNamespace: m.mqtt.messageNamespace,
            token: tok ?? "",
            clientId: m.mqtt.clientId,
            keepaliveSeconds: m.mqtt.keepaliveSeconds,
            username: m.mqtt.username,
            password: m.mqtt.password,
            dialTimeoutMs: m.dialTimeoutMs,
            log,
          }).dial(timeout);
        }
        case "grpc": {
          const { GrpcLinkDialer } = await import("./grpc/grpc_link_dialer.ts");
          return await new GrpcLinkDialer({
            target: m.target,
            device,
            token: tok,
            // TLS unless the config allows plaintext explicitly (insecure: true).
            tls: m.insecure
              ? undefined
              : { ca: tls?.ca, cert: tls?.cert, key: tls?.key, serverName: tls?.serverName },
            acceptTimeoutMs: m.dialTimeoutMs,
            log,
          }).dial(timeout);
        }
      }
    },
  };
}
