/**
 * `deno task cluster:up|cluster:down` (and `build`): the local control plane by hand.
 *
 * `up` builds the binaries if the pin changed, starts a fresh control plane
 * that keeps running after this command, and prints the kubeconfig path;
 * `up --worker` adds a real worker node (e2e/cluster/worker_node.ts: the
 * kubelet with containerd) that keeps running too. `down` stops both and
 * removes their state.
 */
import { parseArgs } from "node:util";
import { binPath, ensureBuilt } from "./build.ts";
import { DEFAULT_CLUSTER_DIR, startControlPlane, stopControlPlane } from "./control_plane.ts";
import {
  DEFAULT_WORKER_ID,
  startWorkerNode,
  stopWorkerNode,
  WORKER_TOLERATION,
  workerSelector,
} from "./worker_node.ts";

const say = (line: string) => console.error(`[cluster] ${line}`);

async function main(args: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args,
    allowPositionals: true,
    options: { worker: { type: "boolean", default: false } },
  });
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
      // A worker of an earlier `up` belongs to the control plane replaced now.
      await stopWorkerNode(DEFAULT_WORKER_ID, say);
      const cp = await startControlPlane({ detached: true, log: say });
      say(`control plane ${cp.version} is ready at ${cp.server}`);
      if (values.worker) {
        const w = await startWorkerNode({
          id: DEFAULT_WORKER_ID,
          kubeconfig: cp.kubeconfig,
          ca: cp.pki.ca,
          detached: true,
          log: say,
        });
        say(
          `worker node "${w.nodeName}" (kubelet ${cp.version}, containerd at ${w.containerdSocket}, ` +
            `pods in ${w.podSubnet}) is Ready; pods reach it with the toleration ` +
            `${JSON.stringify(WORKER_TOLERATION)} and the nodeSelector ` +
            JSON.stringify(workerSelector(w.id)),
        );
      }
      console.log(cp.kubeconfig);
      say(`try: ${binPath("kubectl")} --kubeconfig=${cp.kubeconfig} get --raw /readyz`);
      say("stop it with: deno task cluster:down");
      return 0;
    }
    case "down":
      await stopWorkerNode(DEFAULT_WORKER_ID, say);
      await stopControlPlane(DEFAULT_CLUSTER_DIR);
      say("control plane stopped");
      return 0;
    default:
      console.error('Usage: main.ts build|up [--worker]|down (got "' + (verb ?? "") + '")');
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
