/**
 * The built kubectl as long-running children in a World's namespace: an
 * interactive `exec -i ... -- cat` as an {@link EchoSession}, and
 * `port-forward` until it listens.
 */
import { binPath } from "@aranya/e2e/cluster/build";
import type { World } from "@aranya/e2e/edge_world";
import type { EchoSession } from "./echo.ts";

function spawn(w: World, args: string[], env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(binPath("kubectl"), {
    args: [`--kubeconfig=${w.cluster.kubeconfig}`, "-n", w.ns, ...args],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Ends a child: closes its stdin, waits up to `graceMs`, then SIGKILL. */
async function stop(child: Deno.ChildProcess, graceMs: number): Promise<void> {
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

function collect(stream: ReadableStream<Uint8Array>): { text: () => string; done: Promise<void> } {
  let text = "";
  const dec = new TextDecoder();
  const done = (async () => {
    for await (const c of stream) text += dec.decode(c, { stream: true });
  })().catch(() => {});
  return { text: () => text, done };
}

/** `kubectl exec -i <pod> -c <container> -- cat` as an echo session. */
export function kubectlCat(
  w: World,
  pod: string,
  container: string,
  env: Record<string, string>,
): EchoSession & { stderr: () => string } {
  const child = spawn(w, ["exec", "-i", pod, "-c", container, "--", "cat"], env);
  const writer = child.stdin.getWriter();
  const err = collect(child.stderr);
  let closed: Promise<void> | undefined;
  return {
    stdout: child.stdout,
    stderr: err.text,
    write: (data) => writer.write(data),
    close: () =>
      closed ??= (async () => {
        await writer.close().catch(() => {});
        await stop(child, 5_000);
        await err.done;
      })(),
  };
}

/** A running `kubectl port-forward`. */
export interface PortForward {
  readonly localPort: number;
  output(): string;
  stop(): Promise<void>;
}

/** Starts `kubectl port-forward <target> <local>:<remote>` and waits until it listens. */
export async function kubectlPortForward(
  w: World,
  target: string,
  localPort: number,
  remotePort: number,
  env: Record<string, string>,
  timeoutMs = 30_000,
): Promise<PortForward> {
  const child = spawn(w, ["port-forward", target, `${localPort}:${remotePort}`], env);
  const out = collect(child.stdout);
  const err = collect(child.stderr);
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
        await stop(child, 5_000);
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
