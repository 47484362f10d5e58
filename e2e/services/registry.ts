/**
 * Debian's docker-registry (distribution 2.x) on 127.0.0.1 with basic auth
 * (bcrypt htpasswd). Engines treat 127.0.0.0/8 registries as plain HTTP;
 * Podman gets the address in its project-local registries.conf.
 */
import { ensureDir, stateDir } from "../paths.ts";
import {
  freePort,
  run,
  type ServiceProcess,
  startService,
  stopFromPidFile,
  waitReady,
} from "../process.ts";

/** The registry's test credentials (local only, never a secret). */
export const REGISTRY_USER = "aranya";
export const REGISTRY_PASSWORD = "e2e-registry-password";

/** A running registry. */
export interface Registry extends ServiceProcess {
  /** "127.0.0.1:port" */
  readonly address: string;
}

/** Stops a registry left over from an earlier run. */
export async function stopRegistry(): Promise<void> {
  await stopFromPidFile(`${stateDir("registry")}/service.pid`, "docker-registry");
}

/** Starts the registry on a free port and waits until /v2/ asks for credentials. */
export async function startRegistry(opts: { detached?: boolean } = {}): Promise<Registry> {
  const dir = stateDir("registry");
  await stopRegistry();
  await ensureDir(`${dir}/data`);
  const port = freePort();
  const htpasswd = await run("htpasswd", ["-Bbn", REGISTRY_USER, REGISTRY_PASSWORD]);
  await Deno.writeTextFile(`${dir}/htpasswd`, htpasswd.trim() + "\n");
  const secret = crypto.randomUUID();
  await Deno.writeTextFile(
    `${dir}/config.yml`,
    `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${dir}/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
  secret: ${secret}
auth:
  htpasswd:
    realm: aranya-e2e
    path: ${dir}/htpasswd
`,
  );
  const svc = await startService({
    name: "docker-registry",
    cmd: "docker-registry",
    args: ["serve", `${dir}/config.yml`],
    logFile: `${dir}/registry.log`,
    pidFile: `${dir}/service.pid`,
    detached: opts.detached,
  });
  await waitReady(svc, async () => {
    const res = await fetch(`http://127.0.0.1:${port}/v2/`);
    await res.body?.cancel();
    return res.status === 401;
  }, 30_000);
  return { ...svc, address: `127.0.0.1:${port}` };
}
