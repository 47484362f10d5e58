/**
 * The pod contract through the real API server, the real aranya and a real
 * arhat on Podman, read with the stock kubectl as a user would:
 *
 * - networking: a pod IP from Podman's default network in status.podIP(s),
 *   the same address in an env variable from `fieldRef: status.podIP`, the
 *   hostPort published on the device, a resolv.conf in the container, the
 *   kubelet's service environment variables;
 * - readiness: an httpGet probe keeps the container and the pod not Ready
 *   until the page exists (ContainersReady and Ready follow), an exec probe
 *   that always fails keeps its container not ready;
 * - liveness: a probe that always fails restarts the container with the
 *   kubelet's back-off (CrashLoopBackOff) and reports the previous end in
 *   lastState;
 * - startup gates liveness (started false until it passes);
 * - hooks and termination: a postStart hook's file, and a termination
 *   message in the terminated state;
 * - an ephemeral container (kubectl debug --target) joins the running pod
 *   and sees the target's processes;
 * - the kubelet's container Events (Created, Started) are recorded.
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { websocketMethod } from "./edge_fixtures.ts";
import { eventually } from "./fixtures.ts";
import { freePort } from "./process.ts";
import { advertisedAddress } from "./kubelet_fixtures.ts";
import { inWorld, TEST } from "./edge_world.ts";

interface ContainerStatusJson {
  name: string;
  ready: boolean;
  started?: boolean;
  restartCount: number;
  state: Record<string, { reason?: string; message?: string; exitCode?: number }>;
  lastState: Record<string, { exitCode?: number; reason?: string }>;
}

Deno.test({
  name:
    "e2e pods: pod IP and hostPort, readiness/liveness/startup probes, CrashLoopBackOff, hooks and termination messages",
  ...TEST,
  fn: () =>
    inWorld(async (w, cluster, services) => {
      const port = freePort();
      const httpPort = freePort();
      const hostPort = freePort();
      const aranya = await w.startAranya(aranyaConfigYaml({
        kubeconfig: w.kubeconfig,
        namespaces: [w.ns],
        httpPort,
        websocket: { port, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
        kubelet: { address: advertisedAddress(), port: freePort(), portCount: 4 },
        node: { heartbeat: "1s", leaseDuration: "10s" },
      }));
      await waitAranyaReady(aranya, httpPort);
      const dev = "contract";
      const token = await w.createDevice(dev);
      await w.startArhat(dev, websocketMethod(port, token, `${w.arhatDir}/ca.crt`));
      await w.nodeReady(dev, "True");
      const image = services.endpoints.testImage;
      const kc = (args: string[], stdin?: string) =>
        cluster.kubectlOk(["-n", w.ns, ...args], stdin);
      const get = async (name: string) => JSON.parse(await kc(["get", "pod", name, "-o", "json"]));
      const statusOf = async (pod: string, container: string) =>
        ((await get(pod)).status?.containerStatuses ?? []).find((c: ContainerStatusJson) =>
          c.name === container
        ) as ContainerStatusJson | undefined;
      const onDevice = {
        nodeSelector: { "arhat.dev/name": dev },
        tolerations: [{ key: "arhat.dev/namespace", operator: "Exists" }],
        terminationGracePeriodSeconds: 1,
      };
      const fast = { periodSeconds: 1, failureThreshold: 1 };
      await kc(
        ["apply", "-f", "-"],
        [
          {
            metadata: { name: "web" },
            spec: {
              ...onDevice,
              hostAliases: [{ ip: "123.45.67.89", hostnames: ["foo.edge", "bar.edge"] }],
              containers: [
                {
                  name: "web",
                  image,
                  command: [
                    "sh",
                    "-c",
                    "mkdir -p /www && echo edge > /www/index.html && exec httpd -f -p 8080 -h /www",
                  ],
                  ports: [{ name: "http", containerPort: 8080, hostPort }],
                  env: [{ name: "MY_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } }],
                  readinessProbe: { httpGet: { port: "http", path: "/ready" }, ...fast },
                  lifecycle: {
                    postStart: { exec: { command: ["sh", "-c", "echo hooked > /tmp/post"] } },
                  },
                },
                {
                  name: "never-ready",
                  image,
                  command: ["sleep", "3600"],
                  readinessProbe: { exec: { command: ["false"] }, ...fast },
                },
              ],
            },
          },
          {
            metadata: { name: "sick" },
            spec: {
              ...onDevice,
              containers: [{
                name: "sick",
                image,
                command: ["sleep", "3600"],
                livenessProbe: { exec: { command: ["false"] }, ...fast },
              }],
            },
          },
          {
            metadata: { name: "slow" },
            spec: {
              ...onDevice,
              containers: [{
                name: "slow",
                image,
                command: ["sleep", "3600"],
                startupProbe: {
                  exec: { command: ["test", "-f", "/tmp/up"] },
                  periodSeconds: 1,
                  failureThreshold: 120,
                },
              }],
            },
          },
          {
            metadata: { name: "last-words" },
            spec: {
              ...onDevice,
              restartPolicy: "Never",
              containers: [{
                name: "main",
                image,
                command: ["sh", "-c", "echo goodbye > /dev/termination-log; exit 3"],
              }],
            },
          },
        ].map((o) => JSON.stringify({ apiVersion: "v1", kind: "Pod", ...o })).join("\n---\n"),
      );

      // Networking.
      const web = await eventually("web Running with a pod IP", async () => {
        const p = await get("web");
        return p.status?.phase === "Running" && p.status.podIP ? p : undefined;
      }, 90_000);
      const podIP: string = web.status.podIP;
      assert.match(podIP, /^10\.88\./, "an address on Podman's default network");
      assert.deepEqual(web.status.podIPs, [{ ip: podIP }]);
      assert.equal(
        (await kc(["exec", "web", "-c", "web", "--", "sh", "-c", "echo $MY_IP"])).trim(),
        podIP,
      );
      const page = await eventually("the hostPort to answer", async () => {
        const r = await fetch(`http://127.0.0.1:${hostPort}/`).catch(() => undefined);
        return r?.ok ? await r.text() : undefined;
      }, 30_000);
      assert.equal(page, "edge\n");
      // The API server reaches the pod IP (pods/proxy): true here, where the device shares the
      // API server's machine; a device behind NAT does not allow it.
      assert.equal(
        await cluster.kubectlOk([
          "get",
          "--raw",
          `/api/v1/namespaces/${w.ns}/pods/web:8080/proxy/index.html`,
        ]),
        "edge\n",
      );
      // The kubelet's service variables: the API server's Service is always among them.
      const apiIP = (await cluster.kubectlOk([
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
      ])).trim();
      assert.equal(
        (await kc(["exec", "web", "-c", "web", "--", "sh", "-c", "echo $KUBERNETES_SERVICE_HOST"]))
          .trim(),
        apiIP,
      );
      assert.match(
        await kc(["exec", "web", "-c", "web", "--", "cat", "/etc/resolv.conf"]),
        /nameserver /,
      );
      assert.equal(await kc(["exec", "web", "-c", "web", "--", "cat", "/tmp/post"]), "hooked\n");
      const hosts = await kc(["exec", "web", "-c", "web", "--", "cat", "/etc/hosts"]);
      assert.match(hosts, /^# Kubernetes-managed hosts file\./);
      assert.match(hosts, new RegExp(`${podIP.replaceAll(".", "\\.")}\tweb\n`));
      assert.match(hosts, /123\.45\.67\.89\tfoo\.edge\tbar\.edge/);

      // The kubelet's container Events (what `kubectl describe pod` lists).
      const events = await eventually("Created and Started Events for web", async () => {
        const out = await kc([
          "get",
          "events",
          "--field-selector",
          "involvedObject.name=web",
          "-o",
          'jsonpath={range .items[*]}{.reason}: {.message}{"\\n"}{end}',
        ]);
        return out.includes("Started container web") ? out : undefined;
      }, 30_000);
      assert.match(events, /Created: Created container: web/);

      // An ephemeral container (kubectl debug) joins the running pod: no restart of the others,
      // it sees the target container's processes.
      const webBefore = (await statusOf("web", "web"))!;
      await kc([
        "debug",
        "web",
        `--image=${image}`,
        "--container=dbg",
        "--target=web",
        "--",
        "sleep",
        "3600",
      ]);
      const dbg = await eventually("the ephemeral container running", async () => {
        const p = await get("web");
        const s = (p.status?.ephemeralContainerStatuses ?? []).find((c: ContainerStatusJson) =>
          c.name === "dbg"
        );
        return s?.state.running ? s : undefined;
      }, 60_000);
      assert.ok(dbg);
      assert.match(await kc(["exec", "web", "-c", "dbg", "--", "ps"]), /httpd/);
      const webAfter = (await statusOf("web", "web"))!;
      assert.equal(webAfter.restartCount, webBefore.restartCount, "the pod was not recreated");

      // Readiness.
      const cond = (
        p: { status: { conditions?: { type: string; status: string }[] } },
        t: string,
      ) => p.status.conditions?.find((c) => c.type === t)?.status;
      let p = await get("web");
      assert.equal(cond(p, "Ready"), "False");
      assert.equal(cond(p, "ContainersReady"), "False");
      assert.equal((await statusOf("web", "web"))?.ready, false);
      await kc(["exec", "web", "-c", "web", "--", "sh", "-c", "echo ok > /www/ready"]);
      await eventually(
        "web's container ready",
        async () => (await statusOf("web", "web"))?.ready || undefined,
        30_000,
      );
      p = await get("web");
      assert.equal(cond(p, "Ready"), "False", "never-ready keeps the pod not Ready");
      assert.equal((await statusOf("web", "never-ready"))?.ready, false);
      assert.equal((await statusOf("web", "web"))?.restartCount, 0);

      // Liveness: restarts with the back-off, the previous end in lastState.
      const looping = await eventually("sick in CrashLoopBackOff", async () => {
        const s = await statusOf("sick", "sick");
        return s?.state.waiting?.reason === "CrashLoopBackOff" ? s : undefined;
      }, 90_000);
      assert.ok(looping.restartCount >= 1);
      assert.ok(looping.lastState.terminated, "lastState.terminated is reported");
      assert.match(looping.state.waiting?.message ?? "", /^back-off \d+s restarting failed/);
      assert.equal((await get("sick")).status.phase, "Running");

      // Startup gates: not started until the file exists.
      let slow = await eventually("slow running", async () => {
        const s = await statusOf("slow", "slow");
        return s?.state.running ? s : undefined;
      }, 60_000);
      assert.equal(slow.started, false);
      assert.equal(slow.ready, false);
      await kc(["exec", "slow", "--", "touch", "/tmp/up"]);
      slow = await eventually("slow started and ready", async () => {
        const s = await statusOf("slow", "slow");
        return s?.started && s.ready ? s : undefined;
      }, 30_000);
      assert.equal(slow.restartCount, 0);

      // Termination message.
      const ended = await eventually("last-words terminated", async () => {
        const s = await statusOf("last-words", "main");
        return s?.state.terminated ? s : undefined;
      }, 60_000);
      assert.equal(ended.state.terminated?.exitCode, 3);
      assert.equal(ended.state.terminated?.reason, "Error");
      assert.equal(ended.state.terminated?.message, "goodbye\n");
      assert.equal((await get("last-words")).status.phase, "Failed");
    }),
});
