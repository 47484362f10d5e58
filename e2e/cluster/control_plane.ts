/**
 * The local Kubernetes control plane: etcd, kube-apiserver,
 * kube-controller-manager and kube-scheduler on 127.0.0.1, with fresh PKI on
 * every start. Used by the tests, `cluster:up` and the demo.
 *
 * The API server can instead serve on one address of this machine that pods
 * reach ({@link ControlPlaneOptions.address}): then it advertises that address,
 * the "kubernetes" Service has it as its endpoint (through kube-proxy, pods in
 * the cluster reach the API server at the Service's address, 10.0.0.1), and its
 * certificate names it. The in-cluster aranya e2e runs it so.
 *
 * The API server runs hardened the way aranya must cope with in production:
 * `--authorization-mode=Node,RBAC`, service-account tokens, and
 * `--kubelet-certificate-authority`, so a kubelet endpoint must present a
 * certificate signed by the cluster CA.
 */
import { CACHE, ensureDir, removeAll } from "../paths.ts";
import {
  freePort,
  run,
  type ServiceProcess,
  sleep,
  startService,
  stopFromPidFile,
  waitReady,
} from "../process.ts";
import { binPath, pinnedVersion } from "./build.ts";
import { type ClusterPki, generatePki, writeKubeconfig } from "./pki.ts";

/** Default home of the long-lived cluster (`cluster:up`, demo). */
export const DEFAULT_CLUSTER_DIR = `${CACHE}/cluster`;

/** Options for {@link startControlPlane}. */
export interface ControlPlaneOptions {
  /** Home folder: PKI and data go to `<dir>/run`, the admin kubeconfig to `<dir>/admin.kubeconfig`. */
  dir?: string;
  /** Keep running after this process exits (`cluster:up`); default false (dies with us). */
  detached?: boolean;
  /**
   * The one address the API server binds and advertises. Default "127.0.0.1" (the "kubernetes"
   * Service then has no endpoint: Endpoints refuse a loopback address). Another address of this
   * machine makes the API server reachable from pods (see the module doc).
   */
  address?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** A running control plane. */
export interface ControlPlane {
  /** Kubernetes version of the binaries, e.g. "v1.34.4". */
  readonly version: string;
  /** Path of the admin kubeconfig. */
  readonly kubeconfig: string;
  /** API server URL. */
  readonly server: string;
  readonly pki: ClusterPki;
  /** Runs the built kubectl against this cluster and returns stdout; throws on failure. */
  kubectl(args: string[], stdin?: string): Promise<string>;
  /** Stops every component and removes the state. Idempotent. */
  stop(): Promise<void>;
}

const COMPONENTS = ["kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"] as const;

/** Stops a control plane left running from `dir` (pidfiles) and removes its state. */
export async function stopControlPlane(dir = DEFAULT_CLUSTER_DIR): Promise<void> {
  for (const c of COMPONENTS) {
    await stopFromPidFile(`${dir}/run/${c}.pid`, c);
  }
  await removeAll(`${dir}/run`);
  await removeAll(`${dir}/admin.kubeconfig`);
}

/** Starts a fresh control plane; resolves when /readyz answers ok and the controllers are healthy. */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const dir = opts.dir ?? DEFAULT_CLUSTER_DIR;
  const log = opts.log ?? (() => {});
  const detached = opts.detached ?? false;
  const runDir = `${dir}/run`;
  const version = await pinnedVersion();

  await stopControlPlane(dir);
  await ensureDir(runDir);
  const address = opts.address ?? "127.0.0.1";
  const loopback = address === "127.0.0.1";
  const pki = await generatePki(`${runDir}/pki`, {
    apiserverSans: loopback ? [] : [`IP:${address}`],
  });
  const ports = {
    etcd: freePort(),
    etcdPeer: freePort(),
    apiserver: freePort(),
    controllerManager: freePort(),
    scheduler: freePort(),
  };
  const server = `https://${address}:${ports.apiserver}`;
  const kubeconfig = `${dir}/admin.kubeconfig`;
  const kcFor = (name: string) => `${runDir}/${name}.kubeconfig`;
  await writeKubeconfig({
    path: kubeconfig,
    server,
    ca: pki.ca.cert,
    client: pki.admin,
    user: "admin",
  });
  await writeKubeconfig({
    path: kcFor("controller-manager"),
    server,
    ca: pki.ca.cert,
    client: pki.controllerManager,
    user: "system:kube-controller-manager",
  });
  await writeKubeconfig({
    path: kcFor("scheduler"),
    server,
    ca: pki.ca.cert,
    client: pki.scheduler,
    user: "system:kube-scheduler",
  });

  const started: ServiceProcess[] = [];
  const start = async (name: typeof COMPONENTS[number], args: string[]) => {
    const svc = await startService({
      name,
      cmd: binPath(name),
      args,
      logFile: `${runDir}/${name}.log`,
      pidFile: `${runDir}/${name}.pid`,
      detached,
    });
    started.push(svc);
    return svc;
  };
  const client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(pki.ca.cert)],
    cert: await Deno.readTextFile(pki.admin.cert),
    key: await Deno.readTextFile(pki.admin.key),
  });
  const httpOk = async (url: string, expect?: string) => {
    const res = await fetch(url, { client, signal: AbortSignal.timeout(3000) });
    const body = await res.text();
    return res.ok && (expect === undefined || body.includes(expect));
  };

  try {
    log(`starting etcd on 127.0.0.1:${ports.etcd}`);
    const etcd = await start("etcd", [
      `--data-dir=${runDir}/etcd-data`,
      `--listen-client-url=http://127.0.0.1:${ports.etcd}`,
      `--listen-peer-url=http://127.0.0.1:${ports.etcdPeer}`,
    ]);
    await waitReady(etcd, () => httpOk(`http://127.0.0.1:${ports.etcd}/health`, "true"), 60_000);

    log(`starting kube-apiserver ${version} on ${server}`);
    const apiserver = await start("kube-apiserver", [
      `--etcd-servers=http://127.0.0.1:${ports.etcd}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${ports.apiserver}`,
      `--tls-cert-file=${pki.apiserver.cert}`,
      `--tls-private-key-file=${pki.apiserver.key}`,
      `--client-ca-file=${pki.ca.cert}`,
      "--authorization-mode=Node,RBAC",
      "--enable-admission-plugins=NodeRestriction",
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-account-key-file=${pki.serviceAccount.pub}`,
      `--service-account-signing-key-file=${pki.serviceAccount.key}`,
      "--service-cluster-ip-range=10.0.0.0/24",
      `--kubelet-client-certificate=${pki.apiserverKubeletClient.cert}`,
      `--kubelet-client-key=${pki.apiserverKubeletClient.key}`,
      `--kubelet-certificate-authority=${pki.ca.cert}`,
      "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
      // The "kubernetes" Service endpoint would be 127.0.0.1, which Endpoints validation refuses.
      ...(loopback ? ["--endpoint-reconciler-type=none"] : []),
      "--allow-privileged=true",
      "--profiling=false",
      "--v=1",
    ]);
    await waitReady(apiserver, () => httpOk(`${server}/readyz`, "ok"), 120_000);

    log("starting kube-controller-manager and kube-scheduler");
    const componentTls = [
      `--tls-cert-file=${pki.componentServing.cert}`,
      `--tls-private-key-file=${pki.componentServing.key}`,
      "--bind-address=127.0.0.1",
      "--leader-elect=false",
    ];
    const cm = await start("kube-controller-manager", [
      `--kubeconfig=${kcFor("controller-manager")}`,
      `--authentication-kubeconfig=${kcFor("controller-manager")}`,
      `--authorization-kubeconfig=${kcFor("controller-manager")}`,
      `--secure-port=${ports.controllerManager}`,
      ...componentTls,
      `--cluster-signing-cert-file=${pki.ca.cert}`,
      `--cluster-signing-key-file=${pki.ca.key}`,
      `--root-ca-file=${pki.ca.cert}`,
      `--service-account-private-key-file=${pki.serviceAccount.key}`,
      "--use-service-account-credentials=true",
      "--controllers=*",
      "--v=1",
    ]);
    const sched = await start("kube-scheduler", [
      `--kubeconfig=${kcFor("scheduler")}`,
      `--authentication-kubeconfig=${kcFor("scheduler")}`,
      `--authorization-kubeconfig=${kcFor("scheduler")}`,
      `--secure-port=${ports.scheduler}`,
      ...componentTls,
      "--v=1",
    ]);
    await waitReady(
      cm,
      () => httpOk(`https://127.0.0.1:${ports.controllerManager}/healthz`, "ok"),
      60_000,
    );
    await waitReady(
      sched,
      () => httpOk(`https://127.0.0.1:${ports.scheduler}/healthz`, "ok"),
      60_000,
    );
    await Deno.writeTextFile(
      `${runDir}/state.json`,
      JSON.stringify({ version, server, kubeconfig, ports }, null, 2) + "\n",
    );
  } catch (err) {
    client.close();
    for (const svc of started.reverse()) await svc.stop(5_000);
    throw err;
  }
  client.close();

  let stopped = false;
  return {
    version,
    kubeconfig,
    server,
    pki,
    kubectl: (args, stdin) =>
      run(binPath("kubectl"), [`--kubeconfig=${kubeconfig}`, ...args], {
        stdin: stdin === undefined ? undefined : new TextEncoder().encode(stdin),
      }),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      for (const svc of [...started].reverse()) await svc.stop(10_000);
      await sleep(0);
      await stopControlPlane(dir);
    },
  };
}
