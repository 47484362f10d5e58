/**
 * `deno task demo`: brings up the local control plane (it keeps running),
 * applies the EdgeDevice CRD and the sample EdgeDevices, and prints what to
 * try. Later work extends it with aranya and a local arhat so the sample
 * device turns into a Ready node.
 */
import { binPath, ensureBuilt } from "./cluster/build.ts";
import { startControlPlane } from "./cluster/control_plane.ts";
import { ROOT } from "./paths.ts";
import { run } from "./process.ts";

const say = (line: string) => console.error(`[demo] ${line}`);

async function main(): Promise<void> {
  await ensureBuilt(say);
  const cp = await startControlPlane({ detached: true, log: say });
  const kubectl = (...args: string[]) =>
    run(binPath("kubectl"), [`--kubeconfig=${cp.kubeconfig}`, ...args]);
  say("applying the EdgeDevice CRD");
  await kubectl("apply", "--server-side", "-f", `${ROOT}/deploy/crds/`);
  await kubectl(
    "wait",
    "--for=condition=Established",
    "--timeout=60s",
    "crd/edgedevices.aranya.arhat.dev",
  );
  say("applying the sample EdgeDevices (namespace edge)");
  // Discovery of the new kind can trail the Established condition briefly.
  for (let i = 0;; i++) {
    try {
      await kubectl("apply", "-f", `${ROOT}/deploy/samples/edgedevices.yaml`);
      break;
    } catch (err) {
      if (i >= 20) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const table = await kubectl("get", "edgedevices", "-n", "edge");
  const k = `${binPath("kubectl")} --kubeconfig=${cp.kubeconfig}`;
  console.log(`
Kubernetes ${cp.version} control plane is running at ${cp.server}
kubeconfig: ${cp.kubeconfig}

${table}
Try:
  ${k} get ed -A -o wide
  ${k} explain edgedevice.spec.connectivity
  ${k} apply -f ${ROOT}/e2e/testdata/invalid/mqtt-without-config.yaml   # refused, names the field

Stop it with: deno task cluster:down
`);
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
}
