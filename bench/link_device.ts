/**
 * The device side of `deno task bench:link`, in its own process so its memory
 * is measured apart from aranya's. Dials with the transport named in the JSON
 * argument, answers with the echo dispatcher, and prints JSON lines:
 * {"ready":true} once connected; {"rss":n} for every "rss" line on stdin.
 */
import { SessionServer } from "@aranya/common/session/session_server";
import { echoDispatcher } from "@aranya/common/session/testing/echo_dispatcher";
import type { LinkDialer } from "@aranya/common/link";

/** What the bench tells the device process. */
export interface DeviceConfig {
  transport: "websocket" | "mqtt" | "grpc";
  device: string;
  token: string;
  /** websocket: wss URL; mqtt: broker URL; grpc: host:port. */
  address: string;
  ca?: string;
  messageNamespace?: string;
}

async function makeDialer(c: DeviceConfig): Promise<LinkDialer> {
  switch (c.transport) {
    case "websocket": {
      const { WebSocketLinkDialer } = await import(
        "@aranya/arhat/connectivity/websocket/ws_link_dialer"
      );
      return new WebSocketLinkDialer({
        url: c.address,
        device: c.device,
        token: c.token,
        tls: { ca: c.ca },
      });
    }
    case "mqtt": {
      const { MqttLinkDialer } = await import("@aranya/arhat/connectivity/mqtt/mqtt_link_dialer");
      return new MqttLinkDialer({
        url: c.address,
        device: c.device,
        token: c.token,
        messageNamespace: c.messageNamespace!,
      });
    }
    case "grpc": {
      const { GrpcLinkDialer } = await import("@aranya/arhat/connectivity/grpc/grpc_link_dialer");
      return new GrpcLinkDialer({ target: c.address, device: c.device, token: c.token });
    }
  }
}

if (import.meta.main) {
  const config = JSON.parse(Deno.args[0]!) as DeviceConfig;
  const link = await (await makeDialer(config)).dial(AbortSignal.timeout(30_000));
  new SessionServer(link, { dispatcher: echoDispatcher().dispatcher }).start();
  const out = (o: unknown) => console.log(JSON.stringify(o));
  out({ ready: true });
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of Deno.stdin.readable) {
    buf += dec.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line === "rss") out({ rss: Deno.memoryUsage().rss });
    }
  }
  link.close("bench finished");
}
