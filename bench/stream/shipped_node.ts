/**
 * The aranya node bench:stream measures, as shipped: the real aranya (its sources under its
 * permission set and V8 flags, as `deno task aranya` runs it) at deploy/'s settings (log level,
 * API rate limits, node timers: aranya's defaults are the shipped ones), and the shipped arhat
 * (bench/shipped_arhat.ts: the bundle, its permission set and V8 flags, a warmed DENO_DIR as the
 * launcher leaves it) dialing it over websocket. Only the addresses are the test's: listeners on
 * 127.0.0.1, the kubelet API on one port of the address the API server reaches.
 */
import type { World } from "@aranya/e2e/edge_world";
import { spawnArhatCommand } from "@aranya/e2e/arhat_harness";
import { arhatDeviceYaml, websocketMethod } from "@aranya/e2e/edge_fixtures";
import { startKubeletAranya } from "@aranya/e2e/kubelet_fixtures";
import { uniqueName } from "@aranya/e2e/fixtures";
import { buildShippedArhat } from "../shipped_arhat.ts";

/** The started node. */
export interface ShippedNode {
  /** The EdgeDevice's and Node's name. */
  node: string;
  /** arhat's pid (the bundle's deno process). */
  arhatPid: number;
}

/**
 * Starts aranya and the shipped arhat for a new EdgeDevice with room for `maxPods` pods; resolves
 * once its Node is Ready. arhat becomes the world's (`w.arhat`), so closing the world stops it
 * after the namespace is gone.
 */
export async function startShippedNode(
  w: World,
  maxPods: number,
  /** arhat's V8 flags instead of the shipped ones (to measure them). */
  arhatV8Flags?: readonly string[],
): Promise<ShippedNode> {
  const { websocketPort: port } = await startKubeletAranya(w);
  const bundle = await buildShippedArhat(
    `${w.arhatDir}/bundle`,
    arhatV8Flags ? { v8Flags: arhatV8Flags } : {},
  );
  await bundle.warm();
  const node = uniqueName("dev");
  const tokenAt = await w.createDevice(node, { pod: { allocatable: maxPods } });
  const dir = await bundle.deviceDir(node);
  await Deno.writeTextFile(`${dir}/token`, await Deno.readTextFile(tokenAt), { mode: 0o600 });
  await Deno.writeTextFile(`${dir}/ca.crt`, w.tls.ca);
  await Deno.writeTextFile(
    `${dir}/config.yaml`,
    arhatDeviceYaml({
      namespace: w.ns,
      name: node,
      stateDir: `${dir}/state`,
      runtimeSocket: w.runtimeSocket,
      image: w.services.endpoints.testImage,
      methods: websocketMethod(port, `${dir}/token`, `${dir}/ca.crt`),
    }),
  );
  w.arhat = spawnArhatCommand(bundle.command(`${dir}/config.yaml`));
  await w.nodeReady(node, "True", 120_000);
  return { node, arhatPid: w.arhat.child.pid };
}
