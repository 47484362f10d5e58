/**
 * The built kubectl as a long-running child (an interactive exec, a port-forward): started in a
 * namespace of a cluster, its output collected, stopped within a grace period.
 */
import { binPath } from "./cluster/build.ts";

/** Which cluster and namespace a kubectl child works in. */
export interface KubectlAt {
  kubeconfig: string;
  namespace: string;
}

/** Starts `kubectl <args>` in `at` with `env`, every stdio piped. */
export function spawnKubectl(
  at: KubectlAt,
  args: string[],
  env: Record<string, string> = {},
): Deno.ChildProcess {
  return new Deno.Command(binPath("kubectl"), {
    args: [`--kubeconfig=${at.kubeconfig}`, "-n", at.namespace, ...args],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Ends a child: waits up to `graceMs` for it to exit, then SIGKILL. */
export async function stopChild(child: Deno.ChildProcess, graceMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const gone = await Promise.race([
    child.status.then(() => true),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), graceMs)),
  ]);
  clearTimeout(timer);
  if (!gone) {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
  }
}

/** Collects a stream's text as it comes; `done` settles when it ends. */
export function collectText(
  stream: ReadableStream<Uint8Array>,
): { text: () => string; done: Promise<void> } {
  let text = "";
  const dec = new TextDecoder();
  const done = (async () => {
    for await (const c of stream) text += dec.decode(c, { stream: true });
  })().catch(() => {});
  return { text: () => text, done };
}

/** A running `kubectl port-forward`. */
export interface PortForward {
  readonly localPort: number;
  output(): string;
  stop(): Promise<void>;
}

/** Starts `kubectl port-forward <target> <local>:<remote>` and waits until it listens. */
export async function kubectlPortForward(
  at: KubectlAt,
  target: string,
  localPort: number,
  remotePort: number,
  env: Record<string, string> = {},
  timeoutMs = 30_000,
): Promise<PortForward> {
  const child = spawnKubectl(at, ["port-forward", target, `${localPort}:${remotePort}`], env);
  const out = collectText(child.stdout);
  const err = collectText(child.stderr);
  let stopped: Promise<void> | undefined;
  const pf: PortForward = {
    localPort,
    output: () => out.text() + err.text(),
    stop: () =>
      stopped ??= (async () => {
        try {
          child.kill("SIGTERM");
        } catch { /* exited */ }
        await child.stdin.close().catch(() => {});
        await stopChild(child, 5_000);
        await Promise.all([out.done, err.done]);
      })(),
  };
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  child.status.then(() => exited = true);
  while (!out.text().includes("Forwarding from")) {
    if (exited || Date.now() > deadline) {
      await pf.stop();
      throw new Error(
        `kubectl port-forward ${target} did not start listening: ${pf.output().trim()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return pf;
}
