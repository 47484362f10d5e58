/**
 * The Podman setting arhat needs on a device whose engine is Podman, installed by the deployer
 * as a drop-in of Podman's own configuration (its own file; the system's containers.conf is
 * never edited).
 *
 * Podman keeps an exec session made through its API (every `kubectl exec`, `kubectl cp` and exec
 * probe) with two conmon processes for `exit_command_delay` after the command ended, 300 s by
 * default, so that its exit code can still be read (Docker's exec cleanup). arhat reads an exec's
 * exit code as soon as the command ends, so on an exec-heavy device the default is a pile of
 * processes (an exec probe every 10 s keeps about 60); 10 s keeps a handful. Podman reads the
 * drop-in when its API service starts (socket-activated `podman.service` exits when idle, so its
 * next start); a service started by hand must be restarted.
 *
 * @module
 */

/** Where the drop-in goes on the device (Podman reads containers.conf.d since 4.0). */
export const PODMAN_DROP_IN = "/etc/containers/containers.conf.d/50-arhat.conf";

/** Seconds a finished API exec session (and its conmon processes) is kept. */
export const EXIT_COMMAND_DELAY_S = 10;

/**
 * Whether arhat's engine on the device is Podman, from the inventory's `runtimeEndpoint`
 * ("unix:///run/podman/podman.sock", or any socket whose file name says podman).
 */
export function usesPodman(runtimeEndpoint: string): boolean {
  const path = runtimeEndpoint.replace(/^unix:\/\//, "");
  return /podman[^/]*$/.test(path);
}

/** The drop-in's text. */
export function podmanDropIn(): string {
  return `# Installed by "deno task deploy" for arhat; see docs/arhat.md ("Runtime").
# A finished API exec session keeps its conmon processes this long (default 300 s).
[engine]
exit_command_delay = ${EXIT_COMMAND_DELAY_S}
`;
}
