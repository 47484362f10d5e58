/**
 * The setting every end-to-end bench runs in: the control plane and services
 * from `useCluster`/`useServices` (running ones named by the ARANYA_TEST_*
 * variables, else fresh ones), one e2e World on Podman, and everything
 * stopped at the end, also on failure or SIGINT/SIGTERM.
 */
import { errorMessage } from "@aranya/common/errors";
import { World } from "@aranya/e2e/edge_world";
import { useCluster, useServices } from "@aranya/e2e/fixtures";

/**
 * Runs `measure` in a fresh World and stops everything afterwards. Resolves
 * with what it measured, or with the error that stopped it (after printing
 * the processes' logs to stderr).
 */
export async function inBenchWorld<T>(
  say: (line: string) => void,
  measure: (w: World) => Promise<T>,
): Promise<{ out?: T; error?: string }> {
  const cluster = await useCluster();
  let services: Awaited<ReturnType<typeof useServices>> | undefined;
  let world: World | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanUp = () =>
    cleaning ??= (async () => {
      await world?.close().catch((e) => say(`closing the world: ${errorMessage(e)}`));
      await services?.release().catch((e) => say(`stopping services: ${errorMessage(e)}`));
      await cluster.release().catch((e) => say(`stopping the control plane: ${errorMessage(e)}`));
    })();
  const onSignal = () => {
    say("interrupted; stopping everything");
    cleanUp().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    services = await useServices();
    world = new World(cluster, services, "podman");
    await world.init();
    return { out: await measure(world) };
  } catch (err) {
    say(`failed: ${errorMessage(err)}`);
    if (world) console.error(await world.tails());
    return { error: errorMessage(err) };
  } finally {
    await cleanUp();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}
