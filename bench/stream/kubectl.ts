/**
 * The built kubectl as long-running children in a World's namespace: an
 * interactive `exec -i ... -- cat` as an {@link EchoSession}, and
 * `port-forward` until it listens (e2e/kubectl_child.ts).
 */
import type { World } from "@aranya/e2e/edge_world";
import { collectText, type KubectlAt, spawnKubectl, stopChild } from "@aranya/e2e/kubectl_child";
import type { EchoSession } from "./echo.ts";

/** The world's cluster and namespace. */
export function worldAt(w: World): KubectlAt {
  return { kubeconfig: w.cluster.kubeconfig, namespace: w.ns };
}

/** `kubectl exec -i <pod> -c <container> -- cat` as an echo session. */
export function kubectlCat(
  w: World,
  pod: string,
  container: string,
  env: Record<string, string>,
): EchoSession & { stderr: () => string } {
  const child = spawnKubectl(worldAt(w), ["exec", "-i", pod, "-c", container, "--", "cat"], env);
  const writer = child.stdin.getWriter();
  const err = collectText(child.stderr);
  let closed: Promise<void> | undefined;
  return {
    stdout: child.stdout,
    stderr: err.text,
    write: (data) => writer.write(data),
    close: () =>
      closed ??= (async () => {
        await writer.close().catch(() => {});
        await stopChild(child, 5_000);
        await err.done;
      })(),
  };
}
