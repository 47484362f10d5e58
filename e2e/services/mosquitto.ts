/** mosquitto (Debian) on 127.0.0.1 with persistence under `.cache/mosquitto`. */
import { ensureDir, stateDir } from "../paths.ts";
import {
  freePort,
  type ServiceProcess,
  startService,
  stopFromPidFile,
  waitReady,
} from "../process.ts";

/** A running broker. */
export interface Broker extends ServiceProcess {
  /** "127.0.0.1:port" */
  readonly address: string;
  /** Its state folder's name under .cache (pass it again to restart with the same data). */
  readonly instance: string;
}

/** The shared broker of a test run (harness, services:up). */
export const SHARED_BROKER = "mosquitto";

/** Stops a broker left over from an earlier run. */
export async function stopMosquitto(instance = SHARED_BROKER): Promise<void> {
  await stopFromPidFile(`${stateDir(instance)}/service.pid`, "mosquitto");
}

/**
 * Starts mosquitto on a free port (or `port`) and waits until it accepts TCP
 * connections. Without `instance` the broker is private to the caller (its own
 * state folder), so a test never stops the harness's shared broker; pass the
 * `instance` of a stopped broker to restart it with its persisted sessions.
 */
export async function startMosquitto(
  opts: { detached?: boolean; port?: number; instance?: string } = {},
): Promise<Broker> {
  const instance = opts.instance ?? `mosquitto-${crypto.randomUUID().slice(0, 8)}`;
  const dir = stateDir(instance);
  await stopMosquitto(instance);
  await ensureDir(`${dir}/data`);
  const port = opts.port ?? freePort();
  await Deno.writeTextFile(
    `${dir}/mosquitto.conf`,
    `per_listener_settings false
allow_anonymous true
persistence true
persistence_location ${dir}/data/
user root
log_dest stderr
# Without it, Nagle plus delayed ACKs add ~40 ms to every small QoS 1 exchange.
set_tcp_nodelay true
listener ${port} 127.0.0.1
`,
  );
  const svc = await startService({
    name: "mosquitto",
    cmd: "mosquitto",
    args: ["-c", `${dir}/mosquitto.conf`],
    logFile: `${dir}/mosquitto.log`,
    pidFile: `${dir}/service.pid`,
    detached: opts.detached,
  });
  await waitReady(svc, async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.close();
    return true;
  }, 30_000);
  return { ...svc, address: `127.0.0.1:${port}`, instance };
}
