/**
 * The kubelet's pod admission and pod termination through the real API
 * server, the real aranya and a real arhat on Podman:
 *
 * - admission: a pod asking a hostPort that a running pod of the same node
 *   holds is rejected as the kubelet rejects it (phase Failed, reason
 *   NodePorts, "Pod was rejected: Predicate NodePorts failed: ...", a Warning
 *   Event) and never runs on the device; once the holder is gone, a new pod
 *   with that port runs (what the StatefulSet controller relies on to recreate
 *   a rejected pod);
 * - termination: a deleted pod held by a finalizer reaches a terminal phase
 *   with its containers' terminated states (Failed for a container killed,
 *   Succeeded for one that exits 0 on SIGTERM) while the finalizer holds it,
 *   nothing of it is left on the device, and it is gone once the finalizer is
 *   removed (what the Job controller's job-tracking finalizer waits for).
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { websocketMethod } from "./edge_fixtures.ts";
import { eventually } from "./fixtures.ts";
import { freePort } from "./process.ts";
import { advertisedAddress } from "./kubelet_fixtures.ts";
import { inWorld, TEST } from "./edge_world.ts";

Deno.test({
  name:
    "e2e pods: a hostPort conflict is rejected as NodePorts; a deleted pod reaches a terminal phase before it goes",
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
      const dev = "admission";
      const token = await w.createDevice(dev);
      await w.startArhat(dev, websocketMethod(port, token, `${w.arhatDir}/ca.crt`));
      await w.nodeReady(dev, "True");
      const image = services.endpoints.testImage;
      const kc = (args: string[], stdin?: string) =>
        cluster.kubectlOk(["-n", w.ns, ...args], stdin);
      const get = async (name: string) => JSON.parse(await kc(["get", "pod", name, "-o", "json"]));
      const gone = async (name: string) =>
        (await kc(["get", "pod", name, "--ignore-not-found", "-o", "name"])).trim() === "";
      const apply = (pods: Record<string, unknown>[]) =>
        kc(
          ["apply", "-f", "-"],
          pods.map((o) => JSON.stringify({ apiVersion: "v1", kind: "Pod", ...o })).join("\n---\n"),
        );
      // Bound to the node directly, as the upstream spec does: the scheduler would not place a
      // pod whose hostPort is taken, the kubelet's admission is what refuses it.
      const onNode = {
        nodeName: dev,
        tolerations: [{ key: "arhat.dev/namespace", operator: "Exists" }],
        terminationGracePeriodSeconds: 1,
      };
      const withPort = (name: string) => ({
        metadata: { name },
        spec: {
          ...onNode,
          containers: [{
            name: "web",
            image,
            command: ["sleep", "3600"],
            ports: [{ name: "conflict", containerPort: 21017, hostPort }],
          }],
        },
      });

      // Admission: the first pod runs, the second asks the same hostPort and is rejected.
      await apply([withPort("first")]);
      await eventually("first Running", async () => {
        const p = await get("first");
        return p.status?.phase === "Running" ? p : undefined;
      }, 90_000);
      await apply([withPort("second")]);
      const rejected = await eventually("second Failed", async () => {
        const p = await get("second");
        return p.status?.phase === "Failed" ? p : undefined;
      }, 60_000);
      assert.equal(rejected.status.reason, "NodePorts");
      assert.equal(
        rejected.status.message,
        "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
      );
      assert.equal(rejected.status.startTime, undefined, "never started");
      assert.deepEqual(await w.appContainers(rejected.metadata.uid), [], "never on the device");
      const event = await eventually("the NodePorts Warning Event", async () => {
        const out = await kc([
          "get",
          "events",
          "--field-selector",
          "involvedObject.name=second",
          "-o",
          'jsonpath={range .items[*]}{.type} {.reason}: {.message}{"\\n"}{end}',
        ]);
        return out.includes("NodePorts") ? out : undefined;
      }, 30_000);
      assert.match(event, /Warning NodePorts: Predicate NodePorts failed/);
      assert.equal((await get("first")).status.phase, "Running", "the admitted pod keeps running");
      // The holder goes: a pod asking the port now runs (the StatefulSet controller's recreate).
      await kc(["delete", "pod", "first", "second", "--grace-period=0", "--force"]);
      await apply([withPort("third")]);
      await eventually("third Running", async () => {
        const p = await get("third");
        return p.status?.phase === "Running" ? p : undefined;
      }, 90_000);

      // Termination: deleted pods held by a finalizer reach a terminal phase.
      const finalizer = "aranya.arhat.dev/test-hold";
      await apply([
        {
          metadata: { name: "killed", finalizers: [finalizer] },
          spec: {
            ...onNode,
            restartPolicy: "Never",
            containers: [{ name: "main", image, command: ["sleep", "3600"] }],
          },
        },
        {
          metadata: { name: "graceful", finalizers: [finalizer] },
          spec: {
            ...onNode,
            restartPolicy: "Always",
            terminationGracePeriodSeconds: 10,
            containers: [{
              name: "main",
              image,
              command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            }],
          },
        },
      ]);
      const uids: Record<string, string> = {};
      for (const name of ["killed", "graceful"]) {
        const p = await eventually(`${name} Running`, async () => {
          const p = await get(name);
          return p.status?.phase === "Running" ? p : undefined;
        }, 90_000);
        uids[name] = p.metadata.uid;
      }
      await kc(["delete", "pod", "killed", "graceful", "--wait=false"]);
      for (
        const [name, phase, exitCode] of [["killed", "Failed", 137], [
          "graceful",
          "Succeeded",
          0,
        ]] as const
      ) {
        const p = await eventually(`${name} ${phase} while its finalizer holds it`, async () => {
          const p = await get(name);
          return p.status?.phase === phase ? p : undefined;
        }, 60_000);
        assert.ok(p.metadata.deletionTimestamp, `${name} is being deleted`);
        const c = p.status.containerStatuses[0];
        assert.equal(c.state.terminated?.exitCode, exitCode, `${name}: ${JSON.stringify(c)}`);
        assert.equal(c.state.terminated?.reason, exitCode === 0 ? "Completed" : "Error");
        assert.equal(c.ready, false);
        const ready = p.status.conditions.find((x: { type: string }) => x.type === "Ready");
        assert.equal(ready?.status, "False");
        assert.deepEqual(
          await w.appContainers(uids[name]!),
          [],
          `nothing of ${name} on the device`,
        );
      }
      for (const name of ["killed", "graceful"]) {
        await kc(["patch", "pod", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}']);
        await eventually(`${name} gone`, async () => (await gone(name)) || undefined, 30_000);
      }
    }),
});
