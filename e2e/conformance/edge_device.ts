/**
 * The conformance run's edge: the real aranya process (deploy/ RBAC, its own
 * permission set) and ONE arhat device on Podman or dockerd, whose virtual
 * Node is the cluster's only node.
 *
 * The EdgeDevice lets the e2e framework's namespaces onto the device
 * (`spec.pod.allowedNamespaceSelector` over their `e2e-framework` label),
 * drops the `arhat.dev/namespace` NoSchedule taint (`spec.node.namespaceTaint:
 * false`), so the suite's pods schedule there without tolerations, and allows
 * up to 110 pods, a kubelet's default. When the CRD does not know those fields
 * yet, a stopgap keeps `spec.pod.allowedNamespaces` in step with the e2e
 * namespaces and removes the taint from the Node once a second; pods created
 * in the instant before the list catches up are then refused (the run's JSON
 * says which mode was used).
 */
import {
  aranyaConfigYaml,
  aranyaKubeconfig,
  type AranyaProcess,
  spawnAranya,
  waitAranyaReady,
} from "../aranya_harness.ts";
import {
  arhatDeviceYaml,
  waitDeviceToken,
  waitNodeReady,
  websocketMethod,
} from "../edge_fixtures.ts";
import { applyCrds, type ClusterHandle } from "../fixtures.ts";
import { testTls } from "../link/test_tls.ts";
import { CACHE, ensureDir, removeAll, ROOT } from "../paths.ts";
import { freePort, type ServiceProcess, sleep, startService, tailLog } from "../process.ts";
import { EngineClient } from "../services/engine_client.ts";

/** The device's namespace and name; its Node has the device's name. */
export const DEVICE_NAMESPACE = "conformance-edge";
export const DEVICE_NAME = "conformance-device";

/** How the e2e namespaces get onto the device. */
export type TenancyMode = "selector" | "stopgap";

/** Options of {@link startEdgeDevice}. */
export interface EdgeDeviceOptions {
  cluster: ClusterHandle;
  /** The device's container engine socket. */
  runtimeSocket: string;
  /** arhat's infra image (present in the engine). */
  infraImage: string;
  /** Names the folders of aranya and arhat (a run's instance). */
  instance: string;
  log?: (line: string) => void;
}

/** A running device. */
export interface EdgeDevice {
  readonly node: string;
  readonly tenancy: TenancyMode;
  readonly aranyaLog: string;
  readonly arhatLog: string;
  /** The ends of both logs, for error messages. */
  tails(lines?: number): Promise<string>;
  /** Stops arhat and aranya and removes the device's containers. Idempotent. */
  stop(): Promise<void>;
}

/** The EdgeDevice: websocket, 110 pods, e2e namespaces allowed, no namespace taint. */
export function deviceManifest(tenancy: TenancyMode): Record<string, unknown> {
  const pod: Record<string, unknown> = { allocatable: 110 };
  const spec: Record<string, unknown> = { connectivity: { method: "websocket" }, pod };
  if (tenancy === "selector") {
    pod.allowedNamespaceSelector = {
      matchExpressions: [{ key: "e2e-framework", operator: "Exists" }],
    };
    spec.node = { namespaceTaint: false };
  }
  return {
    apiVersion: "aranya.arhat.dev/v1alpha1",
    kind: "EdgeDevice",
    metadata: { name: DEVICE_NAME, namespace: DEVICE_NAMESPACE },
    spec,
  };
}

/** Creates the EdgeDevice, with the tenancy fields when the CRD takes them. */
async function createDevice(
  cluster: ClusterHandle,
  log: (line: string) => void,
): Promise<TenancyMode> {
  const apply = (t: TenancyMode) =>
    cluster.kubectl(
      ["apply", "--validate=strict", "-f", "-"],
      JSON.stringify(deviceManifest(t)),
    );
  const r = await apply("selector");
  if (r.code === 0) return "selector";
  if (!/unknown field|field not declared/i.test(r.stderr)) {
    throw new Error(`Creating the EdgeDevice failed: ${r.stderr.trim()}`);
  }
  log(
    `the CRD refuses spec.pod.allowedNamespaceSelector / spec.node.namespaceTaint (${r.stderr.trim()}); using the stopgap (allowedNamespaces kept in step, taint removed)`,
  );
  const r2 = await apply("stopgap");
  if (r2.code !== 0) throw new Error(`Creating the EdgeDevice failed: ${r2.stderr.trim()}`);
  return "stopgap";
}

/** The stopgap loop: allowedNamespaces follows the e2e namespaces, the namespace taint goes. */
async function stopgap(cluster: ClusterHandle, signal: AbortSignal): Promise<void> {
  let last = "";
  while (!signal.aborted) {
    try {
      const out = await cluster.kubectl([
        "get",
        "namespaces",
        "-l",
        "e2e-framework",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        'jsonpath={range .items[?(@.status.phase=="Active")]}{.metadata.name}{"\\n"}{end}',
      ]);
      // The CRD caps the list at 64: the newest namespaces are the ones running tests.
      const names = out.stdout.split("\n").filter(Boolean).slice(-64);
      const key = names.join(",");
      if (out.code === 0 && key !== last) {
        const patch = { spec: { pod: { allowedNamespaces: names } } };
        const r = await cluster.kubectl([
          "patch",
          "edgedevice",
          "-n",
          DEVICE_NAMESPACE,
          DEVICE_NAME,
          "--type=merge",
          "-p",
          JSON.stringify(patch),
        ]);
        if (r.code === 0) last = key;
      }
      const taints = await cluster.kubectl([
        "get",
        "node",
        DEVICE_NAME,
        "-o",
        "jsonpath={.spec.taints[*].key}",
      ]);
      if (taints.stdout.split(" ").includes("arhat.dev/namespace")) {
        await cluster.kubectl(["taint", "node", DEVICE_NAME, "arhat.dev/namespace-"]);
      }
    } catch { /* next round */ }
    await sleep(1000);
  }
}

/**
 * Starts aranya and one arhat on the engine at `runtimeSocket`, creates the
 * EdgeDevice and waits for its Node to be Ready. On failure, whatever started
 * is stopped again.
 */
export async function startEdgeDevice(o: EdgeDeviceOptions): Promise<EdgeDevice> {
  const log = o.log ?? (() => {});
  // Where their permission sets let aranya and arhat read (and arhat write).
  const ARANYA_DIR = `${CACHE}/aranya-e2e/conformance-${o.instance}`;
  const ARHAT_DIR = `${CACHE}/arhat-e2e/conformance-${o.instance}`;
  await removeAll(ARANYA_DIR);
  await removeAll(ARHAT_DIR);
  await ensureDir(ARANYA_DIR);
  await ensureDir(ARHAT_DIR);
  let aranya: AranyaProcess | undefined;
  let arhat: ServiceProcess | undefined;
  const loop = new AbortController();
  let looping: Promise<void> | undefined;
  const aranyaLog = `${ARANYA_DIR}/aranya.log`;
  const arhatLog = `${ARHAT_DIR}/arhat.log`;
  const tails = async (lines = 30) =>
    `aranya (${aranyaLog}):\n${await tailLog(
      aranyaLog,
      lines,
    )}\narhat (${arhatLog}):\n${await tailLog(
      arhatLog,
      lines,
    )}`;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    loop.abort();
    await looping;
    await arhat?.stop().catch(() => {});
    await aranya?.stop().catch(() => {});
    // arhat leaves its pods running when it stops (offline autonomy): remove them.
    const engine = new EngineClient(o.runtimeSocket);
    try {
      await engine.removeContainers({ "arhat.dev/managed": "true" });
    } catch { /* the engine is gone */ }
    engine.close();
  };
  try {
    await applyCrds(o.cluster);
    const tls = await testTls();
    await Deno.writeTextFile(`${ARANYA_DIR}/tls.crt`, tls.cert);
    await Deno.writeTextFile(`${ARANYA_DIR}/tls.key`, tls.key);
    await Deno.writeTextFile(`${ARHAT_DIR}/ca.crt`, tls.ca);
    const kubeconfig = await aranyaKubeconfig(o.cluster, ARANYA_DIR);
    const port = freePort();
    const httpPort = freePort();
    await Deno.writeTextFile(
      `${ARANYA_DIR}/config.yaml`,
      aranyaConfigYaml({
        kubeconfig,
        // Every namespace: aranya's pod watch covers only these, and the suite's pods come from
        // namespaces the framework creates per test.
        namespaces: [],
        httpPort,
        websocket: { port, certFile: `${ARANYA_DIR}/tls.crt`, keyFile: `${ARANYA_DIR}/tls.key` },
        // One node: one kubelet API port, free now (other tests' aranyas may hold 10250...).
        kubelet: { port: freePort(), portCount: 1 },
      }),
    );
    log(`starting aranya (device link wss://127.0.0.1:${port}/v1/link)`);
    aranya = await spawnAranya({ config: `${ARANYA_DIR}/config.yaml`, logFile: aranyaLog });
    await waitAranyaReady(aranya, httpPort);

    await o.cluster.kubectl(["create", "namespace", DEVICE_NAMESPACE]);
    const tenancy = await createDevice(o.cluster, log);
    if (tenancy === "stopgap") looping = stopgap(o.cluster, loop.signal);
    const token = await waitDeviceToken(o.cluster, DEVICE_NAMESPACE, DEVICE_NAME);
    await Deno.writeTextFile(`${ARHAT_DIR}/token`, token);
    await Deno.writeTextFile(
      `${ARHAT_DIR}/config.yaml`,
      arhatDeviceYaml({
        namespace: DEVICE_NAMESPACE,
        name: DEVICE_NAME,
        stateDir: `${ARHAT_DIR}/state`,
        runtimeSocket: o.runtimeSocket,
        image: o.infraImage,
        methods: websocketMethod(port, `${ARHAT_DIR}/token`, `${ARHAT_DIR}/ca.crt`),
      }),
    );
    log(`starting arhat on ${o.runtimeSocket} as the device ${DEVICE_NAMESPACE}/${DEVICE_NAME}`);
    arhat = await startService({
      name: "arhat",
      cmd: "deno",
      args: [
        "run",
        `--config=${ROOT}/deno.json`,
        "-P=arhat",
        "--no-prompt",
        `${ROOT}/arhat/main.ts`,
        "-c",
        `${ARHAT_DIR}/config.yaml`,
      ],
      logFile: arhatLog,
      pidFile: `${ARHAT_DIR}/arhat.pid`,
    });
    await waitNodeReady(o.cluster, DEVICE_NAME, "True", 90_000);
    return { node: DEVICE_NAME, tenancy, aranyaLog, arhatLog, tails, stop };
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    const t = await tails(20);
    await stop();
    throw new Error(`${why}\n${t}`);
  }
}
