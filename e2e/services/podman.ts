/**
 * Podman's Docker-compatible API service on a project-local socket, configured
 * only through project-local files (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF,
 * CONTAINERS_REGISTRIES_CONF), never by editing the system's: runc, cgroupfs,
 * lowered default ulimits, vfs storage under `.cache/podman`.
 */
import { ensureDir, SOCKET_DIR, stateDir } from "../paths.ts";
import { type ServiceProcess, startService, stopFromPidFile, waitReady } from "../process.ts";
import { EngineClient } from "./engine_client.ts";

export const PODMAN_SOCKET = `${SOCKET_DIR}/podman.sock`;

/** The environment that points podman at the project-local configuration. */
export function podmanEnv(): Record<string, string> {
  const dir = stateDir("podman");
  return {
    CONTAINERS_CONF: `${dir}/containers.conf`,
    CONTAINERS_STORAGE_CONF: `${dir}/storage.conf`,
    CONTAINERS_REGISTRIES_CONF: `${dir}/registries.conf`,
  };
}

/** Writes the project-local configuration; `insecureRegistries` are host:port of plain-HTTP registries. */
export async function writePodmanConfig(insecureRegistries: string[]): Promise<void> {
  const dir = await ensureDir(stateDir("podman"));
  await Deno.writeTextFile(
    `${dir}/containers.conf`,
    `[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "${dir}/tmp"
# An API exec session's conmon (two processes) stays until this delay has passed, so its exit
# code can be read (Docker's 5 minutes by default): with exec-heavy use (exec probes, port-forward,
# kubectl cp) that is a pile of processes. arhat reads an exec's exit code within a second.
exit_command_delay = 10
`,
  );
  await Deno.writeTextFile(
    `${dir}/storage.conf`,
    `[storage]
driver = "vfs"
runroot = "${dir}/run"
graphroot = "${dir}/storage"
`,
  );
  const regs = insecureRegistries.map((r) =>
    `\n[[registry]]\nlocation = "${r}"\ninsecure = true\n`
  );
  await Deno.writeTextFile(
    `${dir}/registries.conf`,
    `unqualified-search-registries = []\n${regs.join("")}`,
  );
}

/**
 * Force-removes every container in the project's Podman storage. All of them
 * belong to tests or the demo (the storage is project-local), and a container
 * outlives the API service (its conmon keeps it running), so this runs before
 * the service stops and after it starts. No-op when the service does not answer.
 *
 * Through the API, pods' other containers before their infra containers
 * (EngineClient.removeContainers). When the API cannot list them (a container
 * left in Podman's "Removing" state by an earlier run fails every list with
 * "container not known"), through `podman rm --all --force`, twice: the CLI
 * removes such a container, and its first pass can leave an infra container
 * "Stopping" while it removes the ones joined to it.
 */
export async function removeAllPodmanContainers(): Promise<void> {
  const client = new EngineClient(PODMAN_SOCKET);
  try {
    if (!await client.ping().catch(() => false)) return;
    await client.removeContainers().catch(async () => {
      for (let pass = 0; pass < 2; pass++) {
        await new Deno.Command("podman", {
          args: ["rm", "--all", "--force"],
          env: podmanEnv(),
          stdout: "null",
          stderr: "null",
        }).output();
      }
    });
  } finally {
    client.close();
  }
}

/**
 * Kills conmon processes of the project's storage that outlived their
 * containers: exec sessions whose client went away keep their conmon waiting
 * on its stdio after the container is gone. Only in this process's mount
 * namespace: a run isolated in its own namespaces (a conformance run beside
 * the tests) has its own storage at the same path, and its live containers'
 * conmon processes must not be touched.
 */
async function killStrayConmon(): Promise<void> {
  await new Deno.Command("pkill", {
    args: [
      "-KILL",
      "--ns",
      String(Deno.pid),
      "--nslist",
      "mnt",
      "-f",
      `conmon .*${stateDir("podman")}/`,
    ],
    stdout: "null",
    stderr: "null",
  }).output().catch(() => {});
}

/** Stops a Podman service left over from an earlier run (removing its containers first). */
export async function stopPodman(): Promise<void> {
  await removeAllPodmanContainers();
  await stopFromPidFile(`${stateDir("podman")}/service.pid`, "podman", 20_000);
  await killStrayConmon();
}

/** Starts `podman system service` and waits until /_ping answers. */
export async function startPodman(
  opts: { detached?: boolean; insecureRegistries?: string[] } = {},
): Promise<ServiceProcess> {
  const dir = stateDir("podman");
  await stopPodman();
  await ensureDir(SOCKET_DIR);
  await writePodmanConfig(opts.insecureRegistries ?? []);
  await Deno.remove(PODMAN_SOCKET).catch(() => {});
  const svc = await startService({
    name: "podman",
    cmd: "podman",
    args: ["system", "service", "--time=0", `unix://${PODMAN_SOCKET}`],
    env: podmanEnv(),
    logFile: `${dir}/podman.log`,
    pidFile: `${dir}/service.pid`,
    detached: opts.detached,
  });
  const client = new EngineClient(PODMAN_SOCKET);
  try {
    await waitReady(svc, () => client.ping(), 60_000);
  } catch (err) {
    await svc.stop();
    throw err;
  } finally {
    client.close();
  }
  // Containers of an earlier run that was killed are still in the storage: start clean.
  await removeAllPodmanContainers();
  return {
    ...svc,
    stop: async (graceMs?: number) => {
      await removeAllPodmanContainers();
      await svc.stop(graceMs);
      await killStrayConmon();
    },
  };
}
