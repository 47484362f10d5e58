/**
 * Shared by the kubelet API's end-to-end test and bench:stream: aranya with
 * its kubelet API on an address the API server may proxy to, and one device
 * whose Node is Ready.
 */
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { websocketMethod } from "./edge_fixtures.ts";
import type { World } from "./edge_world.ts";
import { uniqueName } from "./fixtures.ts";
import { freePort } from "./process.ts";

/**
 * The address aranya advertises for its nodes: a non-loopback IPv4 address of
 * this machine, because the API server refuses to proxy node requests
 * (`nodes/<n>/proxy`) to loopback addresses; 127.0.0.1 when there is none.
 */
export function advertisedAddress(): string {
  return Deno.networkInterfaces().find((i) => i.family === "IPv4" && !i.address.startsWith("127."))
    ?.address ?? "127.0.0.1";
}

/** A running aranya with one Ready device node. */
export interface KubeletDevice {
  /** Node (and EdgeDevice) name. */
  node: string;
  /** The node's kubelet port. */
  kubeletPort: number;
  /** Starts the device's arhat again (after a test stopped it). */
  restartArhat(): Promise<void>;
}

/**
 * Starts aranya (its kubelet API on {@link advertisedAddress}, one node port)
 * and arhat for a new EdgeDevice on the world's engine; resolves once the
 * Node is Ready.
 */
export async function startKubeletDevice(
  w: World,
  opts: {
    allowHost?: boolean;
    hostLogDir?: string;
    logLevel?: "info" | "warn";
    /** The Node's pod capacity (EdgeDevice spec.pod.allocatable; the CRD's default is 10). */
    maxPods?: number;
  } = {},
): Promise<KubeletDevice> {
  const port = freePort();
  const httpPort = freePort();
  const kubeletPort = freePort();
  const aranya = await w.startAranya(
    aranyaConfigYaml({
      kubeconfig: w.kubeconfig,
      namespaces: [w.ns],
      httpPort,
      websocket: { port, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
      kubelet: { address: advertisedAddress(), port: kubeletPort, portCount: 1 },
      node: { heartbeat: "1s", leaseDuration: "10s" },
      logLevel: opts.logLevel,
    }),
  );
  await waitAranyaReady(aranya, httpPort);
  const node = uniqueName("dev");
  const token = await w.createDevice(
    node,
    opts.maxPods === undefined ? undefined : { pod: { allocatable: opts.maxPods } },
  );
  const startArhat = () =>
    w.startArhat(node, websocketMethod(port, token, `${w.arhatDir}/ca.crt`), {
      allowHost: opts.allowHost,
      hostLogDir: opts.hostLogDir,
    });
  await startArhat();
  await w.nodeReady(node, "True");
  return { node, kubeletPort, restartArhat: startArhat };
}
