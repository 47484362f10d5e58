/**
 * Test and bench support for running arhat as a real process: a websocket
 * link server playing aranya (restartable on the same port), the arhat child
 * process under its own permission set, and its config.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { StaticAuthenticator } from "@aranya/aranya/connectivity/testing/static_authenticator";
import { WebSocketLinkServer } from "@aranya/aranya/connectivity/websocket/ws_link_server";
import { MsgKind } from "@aranya/common/envelope";
import type { Link } from "@aranya/common/link";
import { SessionClient } from "@aranya/common/session/session_client";
import { type PodStatusMsg_Phase, PodStatusMsgSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { eventually } from "./fixtures.ts";
import { testTls } from "./link/test_tls.ts";
import { ROOT } from "./paths.ts";
import { freePort } from "./process.ts";

const dec = (b: Uint8Array) => new TextDecoder().decode(b);
export const DEVICE = "edge/arhat-e2e";
export const TOKEN = "arhat-e2e-token";

/** aranya's side: one websocket listener on a fixed port, restartable. */
export class FakeAranya {
  readonly port = freePort();
  client?: SessionClient;
  statuses: { uid: string; phase: PodStatusMsg_Phase; restarts: number; at: number }[] = [];
  links = 0;
  #ac?: AbortController;
  #run?: Promise<void>;

  async start(): Promise<void> {
    const tls = await testTls();
    const auth = new StaticAuthenticator();
    auth.setToken(DEVICE, TOKEN);
    this.#ac = new AbortController();
    const server = new WebSocketLinkServer({
      hostname: "127.0.0.1",
      port: this.port,
      tls: { cert: tls.cert, key: tls.key },
      authenticator: auth,
      registry: new MemoryLinkRegistry(),
    });
    this.#run = server.run(this.#ac.signal, (link: Link) => {
      this.links++;
      const c = new SessionClient(link, { unaryTimeoutMs: 120_000 });
      c.onUnsolicited((m) => {
        if (m.kind !== MsgKind.MSG_POD_STATUS) return;
        const s = fromBinary(PodStatusMsgSchema, m.payload);
        this.statuses.push({
          uid: s.uid,
          phase: s.phase,
          restarts: Math.max(0, ...s.containers.map((c) => c.restartCount)),
          at: performance.now(),
        });
      });
      c.start();
      this.client = c;
    });
    await server.ready;
  }

  async stop(): Promise<void> {
    this.#ac?.abort();
    await this.#run;
    this.client = undefined;
  }

  async connected(): Promise<SessionClient> {
    return await eventually("arhat to connect", () => Promise.resolve(this.client), 60_000);
  }
}

/** A running arhat process. */
export interface ArhatProc {
  child: Deno.ChildProcess;
  output: () => string;
}

/** Starts arhat from its sources with exactly its deno.json permission set. */
export function spawnArhat(configPath: string): ArhatProc {
  return spawnArhatCommand({
    cmd: "deno",
    args: ["run", "-P=arhat", "--no-prompt", `${ROOT}/arhat/main.ts`, "-c", configPath],
  });
}

/**
 * Starts arhat with another command line, e.g. the shipped bundle's (bench/shipped_arhat.ts),
 * its output kept as {@link spawnArhat}'s.
 */
export function spawnArhatCommand(
  c: { cmd: string; args: string[]; env?: Record<string, string> },
): ArhatProc {
  const child = new Deno.Command(c.cmd, {
    args: c.args,
    env: c.env,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s) out += dec(c);
  };
  pump(child.stdout);
  pump(child.stderr);
  return { child, output: () => out };
}

/** Stops an arhat process (SIGTERM by default) and waits for it. */
export async function kill(
  p: ArhatProc | undefined,
  signal: Deno.Signal = "SIGTERM",
): Promise<void> {
  if (!p) return;
  try {
    p.child.kill(signal);
  } catch { /* exited */ }
  await p.child.status;
}

/** arhat's config for these tests. */
export function arhatConfig(
  o: {
    socket: string;
    image: string;
    stateDir: string;
    port: number;
    ca: string;
    /** Turns on every host management switch (exec, attach, logs, port-forward). */
    allowHost: boolean;
    /** Host log folder (host.logDir). */
    logDir?: string;
  },
): string {
  return `device: { namespace: edge, name: arhat-e2e }
stateDir: ${o.stateDir}
log: { level: info }
runtime:
  endpoint: unix://${o.socket}
  infraImage: ${o.image}
host:
  allowExec: ${o.allowHost}
  allowAttach: ${o.allowHost}
  allowLogs: ${o.allowHost}
  allowPortForward: ${o.allowHost}${o.logDir ? `\n  logDir: ${o.logDir}` : ""}
connectivity:
  backoff: { initialDelay: 200ms, maxDelay: 1s, factor: 1.5 }
  methods:
    - method: websocket
      url: wss://localhost:${o.port}/v1/link
      token: ${TOKEN}
      tls: { caFile: ${o.ca} }
`;
}
