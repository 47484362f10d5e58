/**
 * What tests use to reach the real control plane and services.
 *
 * Under `deno task test` the harness has started everything once and exported
 * `ARANYA_TEST_KUBECONFIG` and the `ARANYA_TEST_*` service variables; a test file
 * run on its own (`deno test -P=e2e e2e/x_test.ts`) starts what it needs itself
 * and stops it afterwards. `ARANYA_TEST_KUBECONFIG` may also name any existing
 * cluster's kubeconfig, and then tests use that cluster.
 */
import { binPath, ensureBuilt } from "./cluster/build.ts";
import { startControlPlane, stopControlPlane } from "./cluster/control_plane.ts";
import { CACHE, ensureDir, ROOT } from "./paths.ts";
import { isAlive, sleep } from "./process.ts";
import { endpointsFromEnv, type ServiceEndpoints, startServices } from "./services/mod.ts";
import { refuseInUnitRun } from "./unit_run.ts";

/** Result of a command that may fail. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Access to a cluster. */
export interface ClusterHandle {
  readonly kubeconfig: string;
  /** Runs the built kubectl; resolves with code and output (does not throw on failure). */
  kubectl(args: string[], stdin?: string): Promise<CommandResult>;
  /** Runs the built kubectl and returns stdout; throws with stderr on failure. */
  kubectlOk(args: string[], stdin?: string): Promise<string>;
  /** Releases the cluster (stops it when this handle started it). */
  release(): Promise<void>;
}

async function kubectl(kubeconfig: string, args: string[], stdin?: string): Promise<CommandResult> {
  const child = new Deno.Command(binPath("kubectl"), {
    args: [`--kubeconfig=${kubeconfig}`, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A handle on the cluster of `kubeconfig`; `release` is what releasing it does. */
export function clusterHandle(kubeconfig: string, release: () => Promise<void>): ClusterHandle {
  return {
    kubeconfig,
    kubectl: (args, stdin) => kubectl(kubeconfig, args, stdin),
    kubectlOk: async (args, stdin) => {
      const r = await kubectl(kubeconfig, args, stdin);
      if (r.code !== 0) {
        throw new Error(`kubectl ${args.join(" ")} failed (code ${r.code}): ${r.stderr.trim()}`);
      }
      return r.stdout;
    },
    release,
  };
}

/** The cluster for this test: the harness's (or ARANYA_TEST_KUBECONFIG's), else a fresh one. */
export async function useCluster(): Promise<ClusterHandle> {
  refuseInUnitRun("the control plane");
  const existing = Deno.env.get("ARANYA_TEST_KUBECONFIG");
  await ensureBuilt(); // the built kubectl is used even against an existing cluster
  if (existing) return clusterHandle(existing, () => Promise.resolve());
  // One folder per test process, so test files run side by side (two terminals, parallel
  // helpers) never stop each other's control plane; folders of processes that died are
  // swept (their components stopped) first.
  const base = `${CACHE}/cluster-standalone`;
  const ns = await pidNamespace();
  const dir = `${base}/${ns}-${Deno.pid}`;
  // The folder's owner holds a lock on "<folder>.owner" while it lives (flock: seen across PID
  // namespaces, released by the kernel when the owner dies), taken before the folder exists.
  await ensureDir(base);
  const owner = await Deno.open(`${dir}.owner`, { create: true, write: true });
  await owner.lock(true);
  await sweepStandalone(base, ns);
  const cp = await startControlPlane({ dir });
  return clusterHandle(cp.kubeconfig, async () => {
    await cp.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(`${dir}.owner`).catch(() => {});
    owner.close();
  });
}

/**
 * This process's PID namespace (its inode number): a run in another namespace
 * (an isolated conformance run) sees other PIDs, so only folders of our own
 * namespace are judged by their PID.
 */
async function pidNamespace(): Promise<string> {
  const link = await Deno.readLink("/proc/self/ns/pid").catch(() => "");
  const fromLink = /\[(\d+)\]/.exec(link)?.[1];
  if (fromLink) return fromLink;
  // Deno wants --allow-all for /proc/self/ns; procps reads it for us. Without either, every
  // isolated run (where this process is often PID 1) would share the name "0-1".
  const out = await new Deno.Command("ps", {
    args: ["-o", "pidns=", "-p", String(Deno.pid)],
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => undefined);
  const fromPs = out ? new TextDecoder().decode(out.stdout).trim() : "";
  return /^\d+$/.test(fromPs) ? fromPs : "0";
}

async function sweepStandalone(base: string, ns: string): Promise<void> {
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(base));
  } catch {
    return;
  }
  for (const e of entries) {
    const m = /^(\d+)-(\d+)$/.exec(e.name);
    if (!e.isDirectory || !m || `${m[1]}-${m[2]}` === `${ns}-${Deno.pid}`) continue;
    const dir = `${base}/${e.name}`;
    // Its owner's lock decides, whatever PID namespace the owner runs in.
    const owner = await Deno.open(`${dir}.owner`, { write: true }).catch(() => undefined);
    if (owner) {
      const dead = await owner.tryLock(true).catch(() => false);
      if (dead) {
        await stopControlPlane(dir).catch(() => {});
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        await Deno.remove(`${dir}.owner`).catch(() => {});
      }
      owner.close();
      continue;
    }
    // A folder from before owner locks: judged by its PID, in our own namespace only.
    if (m[1] !== ns) continue;
    // Deno's permission check refuses /proc/<pid> without --allow-all: ask procps (isAlive).
    if (isAlive(Number(m[2]))) continue;
    await stopControlPlane(dir).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Access to the services, and how to release them. */
export interface ServicesHandle {
  readonly endpoints: ServiceEndpoints;
  release(): Promise<void>;
}

/** The services for this test: the harness's, else freshly started ones. */
export async function useServices(): Promise<ServicesHandle> {
  refuseInUnitRun("the test services (container engines, broker, registry)");
  const existing = endpointsFromEnv();
  if (existing) return { endpoints: existing, release: () => Promise.resolve() };
  const s = await startServices();
  return { endpoints: s.endpoints, release: () => s.stop() };
}

/** A name unlikely to clash between test runs against a shared cluster. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Polls `fn` until it returns a value other than undefined; throws after `ms`
 * with what was awaited and the last error seen.
 */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  ms = 60_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await sleep(500);
  }
  throw new Error(`Timed out after ${ms} ms waiting for ${what}${last ? `: ${last}` : ""}`);
}

/** Applies the EdgeDevice CRD from deploy/crds and waits until it is Established. */
export async function applyCrds(cluster: ClusterHandle): Promise<void> {
  await cluster.kubectlOk([
    "apply",
    "--server-side",
    // deno task deploy (e2e/deploy_e2e_test.ts) may own the CRD's fields by now.
    "--force-conflicts",
    "-f",
    `${ROOT}/deploy/crds/`,
  ]);
  await cluster.kubectlOk([
    "wait",
    "--for=condition=Established",
    "--timeout=60s",
    "crd/edgedevices.aranya.arhat.dev",
  ]);
}
