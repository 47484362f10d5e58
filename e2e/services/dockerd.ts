/**
 * dockerd (Debian docker.io) on a project-local socket: vfs storage,
 * cgroupfs, data under `.cache/docker`, and its default bridge network
 * (`docker0`, with iptables NAT and published ports) on a fixed subnet that
 * stays clear of Podman's 10.88.0.0/16, so pods on Docker get IPs and
 * hostPorts like pods on Podman. The bridge and its iptables chains stay on
 * the host after dockerd stops (dockerd reuses them on its next start).
 */
import { ensureDir, SOCKET_DIR, stateDir } from "../paths.ts";
import { run, type ServiceProcess, startService, stopFromPidFile, waitReady } from "../process.ts";
import { EngineClient } from "./engine_client.ts";

export const DOCKER_SOCKET = `${SOCKET_DIR}/docker.sock`;
/** The gateway address and subnet of dockerd's default bridge. */
export const DOCKER_BRIDGE_CIDR = "10.89.0.1/16";
const EXEC_ROOT = `${SOCKET_DIR}/docker-exec`;

/** Stops a dockerd left over from an earlier run and unmounts its network namespace file. */
export async function stopDockerd(): Promise<void> {
  const dir = stateDir("docker");
  await stopFromPidFile(`${dir}/service.pid`, "dockerd", 20_000);
  // dockerd's own pid file: a dockerd whose service.pid is gone (started by hand, or by a run
  // that died before writing it) still blocks the next start.
  await stopFromPidFile(`${dir}/dockerd.pid`, "dockerd", 20_000);
  // Minimal mode leaves an nsfs mount behind.
  await run("umount", [`${EXEC_ROOT}/netns/default`]).catch(() => {});
}

/** Starts dockerd and waits until /_ping answers. */
export async function startDockerd(opts: { detached?: boolean } = {}): Promise<ServiceProcess> {
  const dir = stateDir("docker");
  await stopDockerd();
  await ensureDir(SOCKET_DIR);
  await ensureDir(dir);
  await Deno.remove(DOCKER_SOCKET).catch(() => {});
  await Deno.writeTextFile(`${dir}/daemon.json`, "{}\n");
  const svc = await startService({
    name: "dockerd",
    cmd: "dockerd",
    args: [
      `--config-file=${dir}/daemon.json`,
      `--data-root=${dir}/root`,
      `--exec-root=${EXEC_ROOT}`,
      `--pidfile=${dir}/dockerd.pid`,
      `--host=unix://${DOCKER_SOCKET}`,
      `--bip=${DOCKER_BRIDGE_CIDR}`,
      "--storage-driver=vfs",
      "--exec-opt=native.cgroupdriver=cgroupfs",
    ],
    logFile: `${dir}/dockerd.log`,
    pidFile: `${dir}/service.pid`,
    detached: opts.detached,
  });
  const client = new EngineClient(DOCKER_SOCKET);
  try {
    await waitReady(svc, () => client.ping(), 60_000);
  } catch (err) {
    await svc.stop();
    throw err;
  } finally {
    client.close();
  }
  return {
    ...svc,
    stop: async (graceMs?: number) => {
      await svc.stop(graceMs ?? 20_000);
      await run("umount", [`${EXEC_ROOT}/netns/default`]).catch(() => {});
    },
  };
}
