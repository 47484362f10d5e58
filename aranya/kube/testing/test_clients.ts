/**
 * Test support: aranya's API clients on a test cluster's kubeconfig, with a
 * rate limit high enough never to slow a test down.
 */
import { type KubeClients, loadKubeConfig, makeKubeClients } from "../client.ts";
import { TokenBucket } from "../rate_limiter.ts";

/** The clients aranya would make from the kubeconfig file `kubeconfig`. */
export function testClients(kubeconfig: string): KubeClients {
  return makeKubeClients(loadKubeConfig({ kubeconfig, env: {} }), {
    limiter: new TokenBucket({ qps: 10_000, burst: 10_000 }),
  });
}
