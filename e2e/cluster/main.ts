/**
 * `deno task cluster:up|cluster:down` (and `build`): the local control plane by hand.
 *
 * `up` builds the binaries if the pin changed, starts a fresh control plane
 * that keeps running after this command, and prints the kubeconfig path.
 * `down` stops it and removes its state.
 */
import { parseArgs } from "node:util";
import { binPath, ensureBuilt } from "./build.ts";
import { DEFAULT_CLUSTER_DIR, startControlPlane, stopControlPlane } from "./control_plane.ts";

const say = (line: string) => console.error(`[cluster] ${line}`);

async function main(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const verb = positionals[0];
  switch (verb) {
    case "build": {
      const b = await ensureBuilt(say);
      say(
        b.built ? `built ${b.version} in ${b.seconds.toFixed(0)} s` : `${b.version} is up to date`,
      );
      return 0;
    }
    case "up": {
      const b = await ensureBuilt(say);
      if (b.built) say(`built ${b.version} in ${b.seconds.toFixed(0)} s`);
      const cp = await startControlPlane({ detached: true, log: say });
      say(`control plane ${cp.version} is ready at ${cp.server}`);
      console.log(cp.kubeconfig);
      say(`try: ${binPath("kubectl")} --kubeconfig=${cp.kubeconfig} get --raw /readyz`);
      say("stop it with: deno task cluster:down");
      return 0;
    }
    case "down":
      await stopControlPlane(DEFAULT_CLUSTER_DIR);
      say("control plane stopped");
      return 0;
    default:
      console.error('Usage: main.ts build|up|down (got "' + (verb ?? "") + '")');
      return 2;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`[cluster] ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
