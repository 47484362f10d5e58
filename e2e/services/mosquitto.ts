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
}

/** Stops a broker left over from an earlier run. */
export async function stopMosquitto(): Promise<void> {
  await stopFromPidFile(`${stateDir("mosquitto")}/service.pid`, "mosquitto");
}

/** Starts mosquitto on a free port (or `port`) and waits until it accepts TCP connections. */
export async function startMosquitto(
  opts: { detached?: boolean; port?: number } = {},
): Promise<Broker> {
  const dir = stateDir("mosquitto");
  await stopMosquitto();
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
  return { ...svc, address: `127.0.0.1:${port}` };
}
