/** mosquitto (Debian) on 127.0.0.1 with persistence under `.cache/mosquitto`. */
import { ensureDir, stateDir } from "../paths.ts";
import {
  freePort,
  type ServiceProcess,
  startService,
  stopFromPidFile,
  waitReady,
} from "../process.ts";
import { refuseInUnitRun } from "../unit_run.ts";

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
  opts: {
    detached?: boolean;
    port?: number;
    instance?: string;
    /**
     * Turns on the dynamic security plugin, as a production broker for aranya
     * would run: no anonymous clients, default deny, and an admin account (for
     * aranya) allowed the plugin's control topic and every other topic.
     */
    dynamicSecurity?: { adminUser: string; adminPassword: string };
  } = {},
): Promise<Broker> {
  refuseInUnitRun("mosquitto");
  const instance = opts.instance ?? `mosquitto-${crypto.randomUUID().slice(0, 8)}`;
  const dir = stateDir(instance);
  await stopMosquitto(instance);
  await ensureDir(`${dir}/data`);
  const port = opts.port ?? freePort();
  let plugin = "";
  const ds = opts.dynamicSecurity;
  if (ds) {
    const file = `${dir}/dynsec.json`;
    if (!await Deno.stat(file).then(() => true, () => false)) {
      const out = await new Deno.Command("mosquitto_ctrl", {
        args: ["dynsec", "init", file, ds.adminUser, ds.adminPassword],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!out.success) {
        throw new Error(
          `mosquitto_ctrl dynsec init failed: ${new TextDecoder().decode(out.stderr)}`,
        );
      }
      // The admin (aranya) also uses every device topic.
      const config = JSON.parse(await Deno.readTextFile(file));
      const admin = config.roles.find((r: { rolename: string }) => r.rolename === "admin");
      for (const acltype of ["publishClientSend", "publishClientReceive", "subscribePattern"]) {
        admin.acls.push({ acltype, topic: "#", priority: -1, allow: true });
      }
      await Deno.writeTextFile(file, JSON.stringify(config, null, 2));
    }
    plugin = `plugin ${await dynsecPlugin()}\nplugin_opt_config_file ${file}\n`;
  }
  await Deno.writeTextFile(
    `${dir}/mosquitto.conf`,
    `per_listener_settings false
${plugin}allow_anonymous ${ds ? "false" : "true"}
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

/** Where Debian installs mosquitto's dynamic security plugin. */
async function dynsecPlugin(): Promise<string> {
  for (const dir of ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"]) {
    const path = `${dir}/mosquitto_dynamic_security.so`;
    if (await Deno.stat(path).then(() => true, () => false)) return path;
  }
  throw new Error("mosquitto_dynamic_security.so not found (Debian package mosquitto)");
}
