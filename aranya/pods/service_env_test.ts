import assert from "node:assert/strict";
import type { V1Service } from "@kubernetes/client-node";
import { serviceEnv } from "./service_env.ts";

const svc = (
  namespace: string,
  name: string,
  clusterIP: string,
  ports: { port: number; name?: string; protocol?: string }[],
): V1Service => ({ metadata: { namespace, name }, spec: { clusterIP, ports } });

Deno.test("service env: the kubelet's variables, the API server's always, links opt-out", () => {
  const all = [
    svc("default", "kubernetes", "10.0.0.1", [{ port: 443, name: "https" }]),
    svc("app", "redis-main", "10.0.0.7", [{ port: 6379 }, {
      port: 53,
      name: "dns",
      protocol: "UDP",
    }]),
    svc("app", "headless", "None", [{ port: 80 }]),
    svc("other", "db", "10.0.0.9", [{ port: 5432 }]),
  ];
  const env = serviceEnv("app", true, all);
  assert.equal(env.KUBERNETES_SERVICE_HOST, "10.0.0.1");
  assert.equal(env.KUBERNETES_SERVICE_PORT, "443");
  assert.equal(env.KUBERNETES_SERVICE_PORT_HTTPS, "443");
  assert.equal(env.KUBERNETES_PORT, "tcp://10.0.0.1:443");
  assert.equal(env.REDIS_MAIN_SERVICE_HOST, "10.0.0.7");
  assert.equal(env.REDIS_MAIN_SERVICE_PORT, "6379");
  assert.equal(env.REDIS_MAIN_SERVICE_PORT_DNS, "53");
  assert.equal(env.REDIS_MAIN_PORT, "tcp://10.0.0.7:6379");
  assert.equal(env.REDIS_MAIN_PORT_53_UDP, "udp://10.0.0.7:53");
  assert.equal(env.REDIS_MAIN_PORT_53_UDP_PROTO, "udp");
  assert.equal(env.REDIS_MAIN_PORT_6379_TCP_PORT, "6379");
  assert.equal(env.REDIS_MAIN_PORT_6379_TCP_ADDR, "10.0.0.7");
  assert.ok(!Object.keys(env).some((k) => k.startsWith("HEADLESS_")), "no cluster IP, no env");
  assert.ok(!Object.keys(env).some((k) => k.startsWith("DB_")), "other namespaces' are not given");
  const off = serviceEnv("app", false, all);
  assert.deepEqual(Object.keys(off).filter((k) => !k.startsWith("KUBERNETES_")), []);
  assert.equal(off.KUBERNETES_SERVICE_HOST, "10.0.0.1");
});
