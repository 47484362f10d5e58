/**
 * kube-proxy built from the pinned module (e2e/cluster/build.ts) for a worker
 * node: it makes the cluster's Services real on this machine, so that pods reach
 * the API server at the "kubernetes" Service (10.0.0.1:443, what in-cluster
 * clients dial) and a process on the host reaches a Service's ClusterIP or
 * NodePort, the way a device outside the cluster reaches aranya.
 *
 * It runs in iptables mode on the host (Services are host-wide rules, not a
 * worker's namespace), with a client certificate of `system:kube-proxy` (bound
 * to `system:node-proxier` by the API server's default RBAC), and is told to
 * leave the host's kernel settings alone: no conntrack table sizing or
 * timeouts (conntrack.* = 0), no NodePorts on 127.0.0.1 (that needs
 * `route_localnet`). Its rules live in its own KUBE-* chains; stopping it runs
 * `kube-proxy --cleanup`, which removes them, and so does starting it (rules
 * left by a kube-proxy that died with its harness).
 */
import { stringify as stringifyYaml } from "yaml";
import { ensureDir } from "../paths.ts";
import { refuseInUnitRun } from "../unit_run.ts";
import { freePort, run, type ServiceProcess, startService, waitReady } from "../process.ts";
import { binPath } from "./build.ts";
import { type CertPair, issueLeaf, writeKubeconfig } from "./pki.ts";

/** Options of {@link startKubeProxy}. */
export interface KubeProxyOptions {
  /** The API server's URL. */
  server: string;
  /** The cluster CA: signs kube-proxy's client certificate. */
  ca: CertPair;
  /** The Node this kube-proxy serves (its NodePorts answer on that Node's addresses). */
  nodeName: string;
  /** The pods' network, e.g. "10.90.0.0/16": traffic from outside it to a Service is masqueraded. */
  clusterCidr: string;
  /** Folder for its certificate, configuration and log (created). */
  dir: string;
  /** Keep running after this process exits (`cluster:up`); default false (dies with us). */
  detached?: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** A running kube-proxy. */
export interface KubeProxy {
  readonly pid: number;
  /** Port of its /healthz on 127.0.0.1. */
  readonly healthzPort: number;
  /** Stops it and removes its rules (`kube-proxy --cleanup`). Idempotent. */
  stop(): Promise<void>;
}

/** Removes the rules any kube-proxy left on this host (its KUBE-* chains); harmless when none. */
export async function cleanupKubeProxyRules(): Promise<void> {
  await run(binPath("kube-proxy"), ["--cleanup", "--v=0"]).catch(() => {});
}

/**
 * Starts kube-proxy and resolves once it has written the rules of every Service once
 * (its /healthz answers 200 only after a first sync).
 *
 * @throws Error naming the end of its log when it exits or is not healthy within 60 s.
 */
export async function startKubeProxy(o: KubeProxyOptions): Promise<KubeProxy> {
  refuseInUnitRun("kube-proxy");
  const log = o.log ?? (() => {});
  const dir = await ensureDir(o.dir);
  await cleanupKubeProxyRules();
  const client = await issueLeaf(dir, o.ca, {
    name: "kube-proxy",
    subject: "/CN=system:kube-proxy",
    usage: "client",
  });
  const kubeconfig = `${dir}/kube-proxy.kubeconfig`;
  await writeKubeconfig({
    path: kubeconfig,
    server: o.server,
    ca: o.ca.cert,
    client,
    user: "system:kube-proxy",
  });
  const healthzPort = freePort();
  const config = {
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    clientConnection: { kubeconfig },
    mode: "iptables",
    hostnameOverride: o.nodeName,
    clusterCIDR: o.clusterCidr,
    healthzBindAddress: `127.0.0.1:${healthzPort}`,
    metricsBindAddress: `127.0.0.1:${freePort()}`,
    // The host's conntrack table and timeouts stay as they are.
    conntrack: {
      maxPerCore: 0,
      min: 0,
      tcpEstablishedTimeout: "0s",
      tcpCloseWaitTimeout: "0s",
    },
    // NodePorts on 127.0.0.1 would need net.ipv4.conf.all.route_localnet=1 on the host.
    iptables: { localhostNodePorts: false, masqueradeAll: false },
  };
  await Deno.writeTextFile(`${dir}/kube-proxy.yaml`, stringifyYaml(config));
  log(`starting kube-proxy for Node "${o.nodeName}" (iptables, healthz 127.0.0.1:${healthzPort})`);
  const svc: ServiceProcess = await startService({
    name: "kube-proxy",
    cmd: binPath("kube-proxy"),
    args: [`--config=${dir}/kube-proxy.yaml`, "--v=1"],
    logFile: `${dir}/kube-proxy.log`,
    pidFile: `${dir}/kube-proxy.pid`,
    detached: o.detached ?? false,
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await svc.stop(10_000);
    await cleanupKubeProxyRules();
  };
  try {
    await waitReady(svc, async () => {
      const res = await fetch(`http://127.0.0.1:${healthzPort}/healthz`, {
        signal: AbortSignal.timeout(2000),
      });
      await res.body?.cancel();
      return res.ok;
    }, 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: svc.pid, healthzPort, stop };
}
