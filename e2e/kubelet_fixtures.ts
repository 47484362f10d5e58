/**
 * Shared by the kubelet API's end-to-end test and bench:stream: aranya with
 * its kubelet API on an address the API server may proxy to, and one device
 * whose Node is Ready.
 */
import { aranyaConfigYaml, type AranyaTestConfig, waitAranyaReady } from "./aranya_harness.ts";
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
 * Starts aranya in the world, the only replica, with its websocket device listener and its
 * kubelet API on {@link advertisedAddress} (one node port), at its default settings but for
 * `config`'s; resolves once it is ready, with the websocket listener's and the kubelet API's
 * ports.
 */
export async function startKubeletAranya(
  w: World,
  config: Pick<AranyaTestConfig, "node" | "logLevel"> = {},
): Promise<{ websocketPort: number; kubeletPort: number }> {
  const websocketPort = freePort();
  const httpPort = freePort();
  const kubeletPort = freePort();
  const aranya = await w.startAranya(
    aranyaConfigYaml({
      kubeconfig: w.kubeconfig,
      namespaces: [w.ns],
      httpPort,
      websocket: { port: websocketPort, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
      kubelet: { address: advertisedAddress(), port: kubeletPort, portCount: 1 },
      ...config,
    }),
  );
  await waitAranyaReady(aranya, httpPort);
  return { websocketPort, kubeletPort };
}

/**
 * Starts aranya ({@link startKubeletAranya}, 1 s heartbeats) and arhat for a new EdgeDevice on
 * the world's engine; resolves once the Node is Ready.
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
  const { websocketPort: port, kubeletPort } = await startKubeletAranya(w, {
    node: { heartbeat: "1s", leaseDuration: "10s" },
    logLevel: opts.logLevel,
  });
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
