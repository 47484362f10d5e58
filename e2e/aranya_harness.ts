/**
 * Test and bench support for running aranya as a real process with the
 * permissions it gets in a cluster: the RBAC of deploy/aranya/ (not admin),
 * through a kubeconfig holding a token of the ServiceAccount
 * aranya-system/aranya, and aranya's own deno.json permission set.
 *
 * - {@link aranyaKubeconfig}: applies deploy/aranya/{namespace,rbac}.yaml and
 *   writes that kubeconfig;
 * - {@link aranyaConfigYaml}: a config file for a test (contract: docs and
 *   aranya/config.ts), leader election off and listeners on given ports;
 * - {@link spawnAranya}: `deno run -P=aranya aranya/main.ts --config <file>`
 *   under `setpriv --pdeathsig KILL` (it dies with the test even when the test
 *   is SIGKILLed), output to a log file;
 * - {@link waitAranyaReady}: polls /readyz, failing early with the log when
 *   aranya exits.
 */
import { binPath } from "./cluster/build.ts";
import type { ClusterHandle } from "./fixtures.ts";
import { CACHE, ensureDir, ROOT } from "./paths.ts";
import { isAlive, type ServiceProcess, startService, tailLog, waitReady } from "./process.ts";
import { v8FlagsArgs } from "@aranya/ops/build/bundle";

/**
 * Where tests keep the files aranya reads (config, kubeconfig, TLS): its
 * deno.json permission set allows reading only there (and ./.cache/test-tls).
 */
export const ARANYA_E2E_DIR = `${CACHE}/aranya-e2e`;

/** Where aranya's manifests live. */
export const DEPLOY_DIR = `${ROOT}/deploy/aranya`;
/** aranya's namespace and ServiceAccount (deploy/aranya/rbac.yaml). */
export const ARANYA_NAMESPACE = "aranya-system";
export const ARANYA_SERVICE_ACCOUNT = "aranya";
/** The user name the API server sees for aranya's token (for `kubectl --as`). */
export const ARANYA_USER = `system:serviceaccount:${ARANYA_NAMESPACE}:${ARANYA_SERVICE_ACCOUNT}`;

/**
 * Applies deploy/aranya/namespace.yaml, rbac.yaml and admission.yaml (server-side apply, so it
 * is idempotent and safe when several tests do it at once).
 */
export async function applyAranyaRbac(cluster: ClusterHandle): Promise<void> {
  await cluster.kubectlOk([
    "apply",
    "--server-side",
    "--force-conflicts",
    "--field-manager=aranya-e2e",
    "-f",
    `${DEPLOY_DIR}/namespace.yaml`,
    "-f",
    `${DEPLOY_DIR}/rbac.yaml`,
    "-f",
    `${DEPLOY_DIR}/admission.yaml`,
  ]);
}

/** The API server address and CA (PEM, base64) of the cluster's admin kubeconfig. */
async function clusterEndpoint(
  cluster: ClusterHandle,
): Promise<{ server: string; caData: string }> {
  const view = JSON.parse(
    await cluster.kubectlOk(["config", "view", "--raw", "--minify", "--flatten", "-o", "json"]),
  );
  const c = view.clusters?.[0]?.cluster;
  if (!c?.server || !c["certificate-authority-data"]) {
    throw new Error(
      `Kubeconfig "${cluster.kubeconfig}" names no server with certificate-authority data`,
    );
  }
  return { server: c.server, caData: c["certificate-authority-data"] };
}

/**
 * Applies aranya's namespace and RBAC to `cluster`, mints a 2 h token for
 * aranya-system/aranya (TokenRequest through `kubectl create token`) and
 * writes a kubeconfig with that token and the cluster's server and CA into
 * `dir` (created if missing; under {@link ARANYA_E2E_DIR} for aranya to read
 * it). Returns the kubeconfig's path.
 */
export async function aranyaKubeconfig(cluster: ClusterHandle, dir: string): Promise<string> {
  await applyAranyaRbac(cluster);
  const token = (await cluster.kubectlOk([
    "create",
    "token",
    ARANYA_SERVICE_ACCOUNT,
    "-n",
    ARANYA_NAMESPACE,
    "--duration=2h",
  ])).trim();
  if (!token) throw new Error(`"kubectl create token" printed no token for ${ARANYA_USER}`);
  const { server, caData } = await clusterEndpoint(cluster);
  const kubeconfig = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "cluster", cluster: { server, "certificate-authority-data": caData } }],
    users: [{ name: "aranya", user: { token } }],
    contexts: [{ name: "aranya", context: { cluster: "cluster", user: "aranya" } }],
    "current-context": "aranya",
  };
  await ensureDir(dir);
  const path = `${dir}/aranya.kubeconfig`;
  // JSON is YAML: every kubeconfig reader takes it.
  await Deno.writeTextFile(path, JSON.stringify(kubeconfig, null, 2) + "\n", { mode: 0o600 });
  return path;
}

/** Runs the built kubectl with another kubeconfig (e.g. aranya's); never throws on failure. */
export async function kubectlAs(
  kubeconfig: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(binPath("kubectl"), {
    args: [`--kubeconfig=${kubeconfig}`, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** What {@link aranyaConfigYaml} writes. */
export interface AranyaTestConfig {
  kubeconfig: string;
  /** Watched namespaces: tests name theirs, so aranya leaves other tests' devices alone. */
  namespaces: string[];
  /** /healthz, /readyz, /metrics on 127.0.0.1:httpPort. */
  httpPort: number;
  /** The websocket device listener on 127.0.0.1:port with these PEM files. */
  websocket?: { port: number; certFile: string; keyFile: string; clientCaFile?: string };
  /** The gRPC device listener on 127.0.0.1:port with these PEM files. */
  grpc?: { port: number; certFile: string; keyFile: string };
  /** Kubelet API: advertised address (default 127.0.0.1), first node port (default 10250), ports. */
  kubelet?: { address?: string; port?: number; portCount?: number };
  /** Client-side API rate limit (default: what deploy/ ships, {@link SHIPPED_API}). */
  api?: { qps: number; burst: number };
  /**
   * One replica among several: membership Leases `<name>-<identity>` in
   * aranya-system with these timers (default: the only replica, no Lease).
   */
  membership?: {
    name: string;
    identity: string;
    leaseDuration?: string;
    renewDeadline?: string;
    retryPeriod?: string;
  };
  /** Node timers, e.g. "1s" (defaults: aranya's). */
  node?: { heartbeat?: string; leaseDuration?: string; statusSync?: string };
  /** Pods: how often running pods' volumes are resolved again (default aranya's 1m). */
  pods?: { syncInterval?: string };
  logLevel?: "debug" | "info" | "warn" | "error";
}

/**
 * The API rate limit deploy/aranya/deployment.yaml ships (kept equal by
 * e2e/manifests_test.ts), which tests and benches use unless they say otherwise.
 */
export const SHIPPED_API = { qps: 500, burst: 1000 };

/** A config file for aranya in tests: the only replica unless told, listeners on 127.0.0.1. */
export function aranyaConfigYaml(o: AranyaTestConfig): string {
  const node = Object.entries(o.node ?? {}).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
  const lines = [
    `kubeconfig: ${JSON.stringify(o.kubeconfig)}`,
    `namespaces: ${JSON.stringify(o.namespaces)}`,
    `logLevel: ${o.logLevel ?? "info"}`,
    `api: { qps: ${o.api?.qps ?? SHIPPED_API.qps}, burst: ${o.api?.burst ?? SHIPPED_API.burst} }`,
    `http: { listen: "127.0.0.1:${o.httpPort}" }`,
    o.membership
      ? `membership: { enabled: true, namespace: aranya-system, name: ${o.membership.name}, identity: ${o.membership.identity}, leaseDuration: ${
        o.membership.leaseDuration ?? "15s"
      }, renewDeadline: ${o.membership.renewDeadline ?? "10s"}, retryPeriod: ${
        o.membership.retryPeriod ?? "2s"
      } }`
      : `membership: { enabled: false }`,
    `kubelet: { address: ${JSON.stringify(o.kubelet?.address ?? "127.0.0.1")}, port: ${
      o.kubelet?.port ?? 10250
    }, portCount: ${o.kubelet?.portCount ?? 8} }`,
    ...(node.length ? [`node: { ${node.join(", ")} }`] : []),
    ...(o.pods?.syncInterval
      ? [`pods: { syncInterval: ${JSON.stringify(o.pods.syncInterval)} }`]
      : []),
    `links:`,
  ];
  if (o.websocket) {
    lines.push(
      `  websocket:`,
      `    listen: "127.0.0.1:${o.websocket.port}"`,
      `    path: /v1/link`,
      `    tls: { certFile: ${JSON.stringify(o.websocket.certFile)}, keyFile: ${
        JSON.stringify(o.websocket.keyFile)
      }${
        o.websocket.clientCaFile
          ? `, clientCaFile: ${JSON.stringify(o.websocket.clientCaFile)}`
          : ""
      } }`,
    );
  }
  if (o.grpc) {
    lines.push(
      `  grpc:`,
      `    listen: "127.0.0.1:${o.grpc.port}"`,
      `    tls: { certFile: ${JSON.stringify(o.grpc.certFile)}, keyFile: ${
        JSON.stringify(o.grpc.keyFile)
      } }`,
    );
  }
  return lines.join("\n") + "\n";
}

/** `deno` arguments that run aranya under its permission set with `config` (and extra flags). */
export function aranyaArgs(config: string, extra: string[] = []): string[] {
  return [
    "run",
    `--config=${ROOT}/deno.json`,
    "-P=aranya",
    "--no-prompt",
    // As deploy/ ships it (compiled with these flags): measured with what users run.
    ...v8FlagsArgs("aranya"),
    `${ROOT}/aranya/main.ts`,
    "--config",
    config,
    ...extra,
  ];
}

/** Options of {@link spawnAranya}. */
export interface SpawnAranyaOptions {
  /** Path of the config file; it and the files it names must be under {@link ARANYA_E2E_DIR}. */
  config: string;
  /** Extra flags after `--config <file>`. */
  args?: string[];
  /** Where stdout and stderr go (appended); default a fresh file under {@link ARANYA_E2E_DIR}. */
  logFile?: string;
  /** Extra environment (added to the inherited one). */
  env?: Record<string, string>;
}

/** A running aranya process. */
export interface AranyaProcess {
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number>;
  /** Sends a signal (no-op when the process is gone). */
  kill(signal?: Deno.Signal): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 10 s); resolves when it is gone. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** The log so far. */
  log(): Promise<string>;
}

/**
 * Starts `deno run -P=aranya aranya/main.ts --config <config> [args]` as a
 * child that dies with this process. Resolves once it was spawned (not when
 * it is ready: see {@link waitAranyaReady}).
 */
export async function spawnAranya(opts: SpawnAranyaOptions): Promise<AranyaProcess> {
  const dir = `${ARANYA_E2E_DIR}/${crypto.randomUUID().slice(0, 8)}`;
  const logFile = opts.logFile ?? `${dir}/aranya.log`;
  const svc: ServiceProcess = await startService({
    name: "aranya",
    cmd: "deno",
    args: aranyaArgs(opts.config, opts.args),
    env: opts.env,
    logFile,
    pidFile: `${dir}/aranya.pid`,
  });
  return {
    pid: svc.pid,
    logFile,
    exited: svc.exited,
    kill: async (signal: Deno.Signal = "SIGTERM") => {
      if (!isAlive(svc.pid)) return;
      // `kill` through procps: Deno.kill needs an unrestricted --allow-run.
      await new Deno.Command("kill", {
        args: ["-s", signal.replace(/^SIG/, ""), String(svc.pid)],
        stdout: "null",
        stderr: "null",
      }).output();
    },
    stop: (graceMs = 10_000) => svc.stop(graceMs),
    log: () => Deno.readTextFile(logFile).catch(() => ""),
  };
}

/**
 * Waits until aranya's /readyz on 127.0.0.1:`httpPort` answers 200. Throws,
 * quoting the end of its log, when it exits first or `timeoutMs` passes.
 */
export async function waitAranyaReady(
  proc: AranyaProcess,
  httpPort: number,
  timeoutMs = 60_000,
): Promise<void> {
  const svc = {
    name: "aranya",
    pid: proc.pid,
    logFile: proc.logFile,
    pidFile: "",
    exited: proc.exited,
    stop: proc.stop,
  };
  await waitReady(svc, async () => {
    const r = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
    await r.body?.cancel();
    return r.status === 200;
  }, timeoutMs);
}

/** The end of aranya's log, for error messages. */
export function aranyaLogTail(proc: AranyaProcess, lines = 40): Promise<string> {
  return tailLog(proc.logFile, lines);
}
