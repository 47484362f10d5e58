/**
 * One end-to-end test's world on the shared cluster and services: a
 * namespace, files, the real aranya process(es) and one arhat on Podman or
 * Docker; `close` stops and removes everything.
 */
import {
  aranyaKubeconfig,
  aranyaLogTail,
  type AranyaProcess,
  spawnAranya,
} from "./aranya_harness.ts";
import { type ArhatProc, kill, spawnArhat } from "./arhat_harness.ts";
import {
  applyCrds,
  type ClusterHandle,
  eventually,
  type ServicesHandle,
  uniqueName,
  useCluster,
  useServices,
} from "./fixtures.ts";
import { testTls } from "./link/test_tls.ts";
import { CACHE } from "./paths.ts";
import { EngineClient } from "./services/engine_client.ts";
import { arhatDeviceYaml, waitDeviceToken, waitNodeReady } from "./edge_fixtures.ts";

/** One test's world: namespace, files, processes; `close` stops and removes everything. */
export class World {
  readonly ns = uniqueName("e2e");
  // Under .cache/aranya-e2e: the aranya permission set may read there (configs, TLS, kubeconfig).
  readonly dir = `${CACHE}/aranya-e2e/edge-${crypto.randomUUID().slice(0, 8)}`;
  /** arhat's files, where the arhat permission set may read and write. */
  readonly arhatDir = `${CACHE}/arhat-e2e/edge-${crypto.randomUUID().slice(0, 8)}`;
  readonly aranyas: AranyaProcess[] = [];
  arhat?: ArhatProc;
  engine: EngineClient;
  tls!: Awaited<ReturnType<typeof testTls>>;
  kubeconfig = "";

  /** The container engine arhat uses (default Podman). */
  readonly runtimeSocket: string;

  constructor(
    readonly cluster: ClusterHandle,
    readonly services: ServicesHandle,
    runtime: "podman" | "docker" = "podman",
  ) {
    this.runtimeSocket = runtime === "docker"
      ? services.endpoints.dockerSocket
      : services.endpoints.podmanSocket;
    this.engine = new EngineClient(this.runtimeSocket);
  }

  async init(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true });
    await Deno.mkdir(this.arhatDir, { recursive: true });
    await applyCrds(this.cluster);
    await this.cluster.kubectlOk(["create", "namespace", this.ns]);
    this.tls = await testTls();
    await Deno.writeTextFile(`${this.dir}/tls.crt`, this.tls.cert);
    await Deno.writeTextFile(`${this.dir}/tls.key`, this.tls.key);
    await Deno.writeTextFile(`${this.arhatDir}/ca.crt`, this.tls.ca);
    this.kubeconfig = await aranyaKubeconfig(this.cluster, this.dir);
  }

  kubectl(args: string[], stdin?: string): Promise<string> {
    return this.cluster.kubectlOk(["-n", this.ns, ...args], stdin);
  }

  // deno-lint-ignore no-explicit-any
  async json(args: string[]): Promise<any> {
    return JSON.parse(await this.kubectl([...args, "-o", "json"]));
  }

  async startAranya(yaml: string): Promise<AranyaProcess> {
    const config = `${this.dir}/aranya-${this.aranyas.length}.yaml`;
    await Deno.writeTextFile(config, yaml);
    const p = await spawnAranya({
      config,
      logFile: `${this.dir}/aranya-${this.aranyas.length}.log`,
    });
    this.aranyas.push(p);
    return p;
  }

  async createDevice(name: string, spec: Record<string, unknown> = {}): Promise<string> {
    await this.kubectl(
      ["apply", "-f", "-"],
      JSON.stringify({
        apiVersion: "aranya.arhat.dev/v1alpha1",
        kind: "EdgeDevice",
        metadata: { name },
        spec,
      }),
    );
    const token = await waitDeviceToken(this.cluster, this.ns, name);
    await Deno.writeTextFile(`${this.arhatDir}/${name}.token`, token);
    return `${this.arhatDir}/${name}.token`;
  }

  async startArhat(
    name: string,
    methods: string,
    opts: { allowHost?: boolean; hostLogDir?: string } = {},
  ): Promise<void> {
    const config = `${this.arhatDir}/${name}-arhat.yaml`;
    await Deno.writeTextFile(
      config,
      arhatDeviceYaml({
        namespace: this.ns,
        name,
        stateDir: `${this.arhatDir}/${name}-state`,
        runtimeSocket: this.runtimeSocket,
        image: this.services.endpoints.testImage,
        methods,
        allowHost: opts.allowHost,
        hostLogDir: opts.hostLogDir,
      }),
    );
    this.arhat = spawnArhat(config);
  }

  nodeReady(name: string, want: "True" | "False", timeoutMs = 60_000): Promise<string> {
    return waitNodeReady(this.cluster, name, want, timeoutMs);
  }

  // deno-lint-ignore no-explicit-any
  async runningPod(selector: string, timeoutMs = 90_000): Promise<any> {
    return await eventually(`a Running pod "${selector}"`, async () => {
      const list = await this.json(["get", "pods", "-l", selector]);
      const p = list.items.find((x: { metadata: { deletionTimestamp?: string } }) =>
        !x.metadata.deletionTimestamp
      );
      return p?.status?.phase === "Running" && p.status.containerStatuses?.[0]?.ready
        ? p
        : undefined;
    }, timeoutMs);
  }

  appContainers(uid: string): ReturnType<EngineClient["containers"]> {
    return this.engine.containers({ "arhat.dev/pod-uid": uid, "arhat.dev/role": "app" });
  }

  async close(): Promise<void> {
    // The namespace goes while aranya and arhat still run: they stop the pods on the device and
    // remove the EdgeDevices' finalizers, Nodes and Leases (stopped first, they would leave the
    // namespace Terminating). Bounded: a test may have taken the device offline.
    await this.cluster.kubectl([
      "delete",
      "namespace",
      this.ns,
      "--ignore-not-found",
      "--wait=false",
    ]);
    await this.cluster.kubectl(["wait", "--for=delete", `namespace/${this.ns}`, "--timeout=20s"]);
    await kill(this.arhat);
    await Promise.allSettled(this.aranyas.map((a) => a.stop()));
    await this.engine.removeContainers({ "arhat.dev/pod-namespace": this.ns }).catch(() => 0);
    this.engine.close();
  }

  /** Logs for a failure message. */
  async tails(): Promise<string> {
    const parts = await Promise.all(this.aranyas.map((a) => aranyaLogTail(a, 30)));
    return [...parts, this.arhat?.output().slice(-3000) ?? ""].join("\n----\n");
  }
}

export const TEST = { sanitizeOps: false, sanitizeResources: false };

/**
 * Runs `body` in a fresh World on the shared cluster and services; prints the
 * processes' logs when it fails; always stops everything it started.
 */
export async function inWorld(
  body: (w: World, cluster: ClusterHandle, services: ServicesHandle) => Promise<void>,
  runtime: "podman" | "docker" = "podman",
): Promise<void> {
  const cluster = await useCluster();
  const services = await useServices();
  const w = new World(cluster, services, runtime);
  try {
    await w.init();
    await body(w, cluster, services);
  } catch (err) {
    console.error(await w.tails());
    throw err;
  } finally {
    await w.close();
    await services.release();
    await cluster.release();
  }
}
