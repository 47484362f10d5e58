/**
 * The whole system end to end: the real aranya process (aranya/main.ts) with
 * the ServiceAccount and RBAC from deploy/aranya (not admin), the real control
 * plane, and a real arhat on Podman.
 *
 * - websocket device: EdgeDevice -> Node Ready; the sample workload
 *   (deploy/samples/workload.yaml) Running with env and files checked inside
 *   the container; a deleted pod's containers gone; link cut -> Node NotReady
 *   while the containers keep running; link back -> Ready with zero
 *   restarts; `kubectl get ed` columns; /metrics and /healthz; EdgeDevice
 *   deleted -> Node, Lease, virtual pod and Secret gone.
 * - an MQTT device through the real mosquitto works the same way.
 * - two active replicas: the device is served by the one holding its link
 *   (node Lease holder, the Node's kubelet port from its range); SIGKILL of
 *   that one moves the device to the other: Ready, exec works, its container
 *   is not restarted; the EdgeDevices the dead one reconciled are served too.
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, type AranyaProcess, waitAranyaReady } from "./aranya_harness.ts";
import { kill } from "./arhat_harness.ts";
import { eventually, uniqueName } from "./fixtures.ts";
import { freePort, freePortRange, sleep } from "./process.ts";
import { websocketMethod } from "./edge_fixtures.ts";
import { credentialsSecretName } from "@aranya/aranya/edgedevice/types";
import { sampleWorkload } from "./samples.ts";
import { registryImage, TEST_IMAGE_TAG } from "./services/mod.ts";
import { inWorld, TEST } from "./edge_world.ts";
import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind, encodeCmd } from "@aranya/common/envelope";
import { FrameSealer, linkKey, newNonce, sessionKeys } from "@aranya/common/mqtt_seal";
import { PodEnsureCmdSchema } from "@aranya/proto/gen/aranya/pod_pb";

Deno.test({
  name:
    "e2e: an EdgeDevice becomes a Ready Node that runs the sample workload, survives a link cut, and is cleaned up",
  ...TEST,
  fn: () =>
    inWorld(async (w, cluster, services) => {
      const port = freePort();
      const httpPort = freePort();
      const aranya = await w.startAranya(
        aranyaConfigYaml({
          kubeconfig: w.kubeconfig,
          namespaces: [w.ns],
          httpPort,
          websocket: { port, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
          node: { heartbeat: "1s", leaseDuration: "10s" },
        }),
      );
      await waitAranyaReady(aranya, httpPort);
      const name = uniqueName("dev");
      const token = await w.createDevice(name);
      await w.startArhat(name, websocketMethod(port, token, `${w.arhatDir}/ca.crt`));
      await w.nodeReady(name, "True");

      // `kubectl get ed` columns.
      const table = await eventually("the EdgeDevice shown Connected", async () => {
        const out = await w.kubectl(["get", "ed", name]);
        return /\bConnected\b/.test(out) ? out : undefined;
      });
      assert.match(table.split("\n")[0]!, /^NAME\s+CONNECTIVITY\s+STATUS\s+NODE\s+AGE/);
      assert.match(
        table.split("\n")[1]!,
        new RegExp(`^${name}\\s+websocket\\s+Connected\\s+${name}\\s+`),
      );

      // The sample workload: env from a Secret and a ConfigMap, a ConfigMap volume.
      await w.kubectl(
        ["apply", "-f", "-"],
        await sampleWorkload(name, services.endpoints.testImage),
      );
      const pod = await w.runningPod("app=edge-demo");
      assert.equal(pod.spec.nodeName, name);
      const [ctr] = await w.appContainers(pod.metadata.uid);
      assert.ok(ctr, "the app container runs on the device");
      const env = await eventually(
        "env.txt inside the container",
        () => w.engine.readFile(ctr.Id, "/tmp/env.txt").catch(() => undefined),
      );
      assert.match(env, /^API_KEY=demo-api-key-123$/m);
      assert.match(env, /^SITE=lab-1$/m);
      assert.equal(
        await w.engine.readFile(ctr.Id, "/etc/edge-demo/app.conf"),
        "interval=5s\ntarget=sensor-0\n",
      );

      // Metrics and health.
      const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
      assert.match(metrics, /^aranya_devices_connected 1$/m);
      assert.match(metrics, /^aranya_api_writes_total \d+$/m);
      assert.match(
        metrics,
        /^aranya_reconcile_total\{controller="edgedevice",result="success"\} [1-9]/m,
      );
      assert.match(metrics, /^aranya_pod_syncs_total\{result="ok"\} [1-9]/m);
      assert.match(metrics, /^aranya_edgedevices 1$/m);
      assert.equal(
        (await (await fetch(`http://127.0.0.1:${httpPort}/healthz`)).text()).trim(),
        "ok",
      );

      // Pod deleted: its containers go; the Deployment makes a new pod.
      await w.kubectl(["delete", "pod", pod.metadata.name, "--wait=true"]);
      assert.deepEqual(
        await w.appContainers(pod.metadata.uid),
        [],
        "the deleted pod's containers are gone",
      );
      const pod2 = await w.runningPod("app=edge-demo");
      const [ctr2] = await w.appContainers(pod2.metadata.uid);

      // Link cut: NotReady, containers keep running on the device.
      const cutAt = Date.now();
      await kill(w.arhat, "SIGKILL");
      assert.equal(await w.nodeReady(name, "False", 40_000), "False/EdgeDeviceDisconnected");
      assert.ok(Date.now() - cutAt < 10_000, "NotReady within the lease grace (10 s)");
      assert.equal((await w.appContainers(pod2.metadata.uid))[0]?.State, "running");

      // Link back: Ready, nothing restarted.
      await w.startArhat(name, websocketMethod(port, token, `${w.arhatDir}/ca.crt`));
      await w.nodeReady(name, "True");
      assert.deepEqual((await w.appContainers(pod2.metadata.uid)).map((c) => c.Id), [ctr2!.Id]);
      const again = await w.json(["get", "pod", pod2.metadata.name]);
      assert.equal(again.status.containerStatuses[0].restartCount, 0);

      // EdgeDevice deleted: Node, Lease, virtual pod and Secret gone.
      await w.kubectl(["delete", "ed", name, "--wait=true", "--timeout=60s"]);
      for (
        const [what, args] of [
          ["Node", ["get", "node", name]],
          ["Lease", ["get", "lease", name, "-n", "kube-node-lease"]],
          ["virtual pod", ["get", "pod", name, "-n", w.ns]],
          ["Secret", ["get", "secret", credentialsSecretName(name), "-n", w.ns]],
        ] as const
      ) {
        await eventually(`the ${what} gone`, async () => {
          const r = await cluster.kubectl([...args]);
          return r.code !== 0 && /NotFound/.test(r.stderr) ? true : undefined;
        }, 30_000);
      }
    }),
});

Deno.test({
  name:
    "e2e: an MQTT device through the real mosquitto works like the websocket one (and pulls with an imagePullSecret)",
  ...TEST,
  fn: () =>
    inWorld(async (w, _cluster, services) => {
      const httpPort = freePort();
      const broker = `mqtt://${services.endpoints.mqtt}`;
      const yaml = aranyaConfigYaml({ kubeconfig: w.kubeconfig, namespaces: [w.ns], httpPort }) +
        `  mqtt: { broker: "${broker}" }\n`;
      const aranya = await w.startAranya(yaml);
      await waitAranyaReady(aranya, httpPort);
      const name = uniqueName("mq");
      const topicNs = `aranya-e2e/${w.ns}/${name}`;
      const token = await w.createDevice(name, {
        connectivity: {
          method: "mqtt",
          mqttConfig: { messageNamespace: topicNs },
        },
      });
      await w.startArhat(
        name,
        `    - method: mqtt
      broker: ${broker}
      insecure: true
      tokenFile: ${token}
      mqtt: { messageNamespace: ${topicNs}, keepaliveSeconds: 10 }
`,
      );
      await w.nodeReady(name, "True");
      // The image comes from the local registry, which wants credentials: an imagePullSecret.
      const { registry, registryUser, registryPassword } = services.endpoints;
      await w.kubectl([
        "create",
        "secret",
        "docker-registry",
        "regcred",
        `--docker-server=${registry}`,
        `--docker-username=${registryUser}`,
        `--docker-password=${registryPassword}`,
      ]);
      await w.kubectl(
        ["apply", "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "mqtt-pod", labels: { app: "mqtt-pod" } },
          spec: {
            imagePullSecrets: [{ name: "regcred" }],
            nodeSelector: { "arhat.dev/name": name },
            tolerations: [{ key: "arhat.dev/namespace", operator: "Exists", effect: "NoSchedule" }],
            terminationGracePeriodSeconds: 2,
            containers: [{
              name: "c",
              image: `${registryImage(registry)}:${TEST_IMAGE_TAG}`,
              imagePullPolicy: "Always",
              command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
            }],
          },
        }),
      );
      const pod = await w.runningPod("app=mqtt-pod");
      assert.ok(pod.status.containerStatuses[0].imageID, "pulled with the pod's credentials");
      assert.equal((await w.appContainers(pod.metadata.uid))[0]?.State, "running");
      await w.kubectl(["delete", "pod", "mqtt-pod", "--wait=true"]);
      assert.deepEqual(await w.appContainers(pod.metadata.uid), []);

      // The broker here has no ACLs: anyone may publish on the device's command topic. A forged
      // pod (plaintext, and sealed with a key that is not the device's) is not obeyed.
      const forger = await mqtt.connectAsync(broker, {
        clientId: `forger-${name}`,
        protocolVersion: 5,
        reconnectPeriod: 0,
      });
      try {
        const forged = encodeCmd({
          kind: CmdKind.CMD_POD_ENSURE,
          sid: 99n,
          seq: 0n,
          complete: true,
          payload: toBinary(
            PodEnsureCmdSchema,
            create(PodEnsureCmdSchema, {
              uid: "forged-uid",
              namespace: w.ns,
              name: "forged",
              hostPid: true,
              containers: [{ name: "c", image: services.endpoints.testImage, command: ["id"] }],
            }),
          ),
        });
        await forger.publishAsync(`${topicNs}/cmd`, Buffer.from(forged), { qos: 1 });
        const wrongKey = sessionKeys(linkKey("a guessed token"), "any", newNonce(), newNonce());
        await forger.publishAsync(
          `${topicNs}/cmd`,
          Buffer.from(new FrameSealer(wrongKey.cmd, "any").seal(forged)),
          { qos: 1 },
        );
      } finally {
        await forger.endAsync(true);
      }
      await sleep(2000);
      assert.deepEqual(
        await w.engine.containers({ "arhat.dev/pod-uid": "forged-uid" }),
        [],
        "the forged pod is not run",
      );
      await w.nodeReady(name, "True", 5_000);
      await kill(w.arhat, "SIGKILL");
      // The broker publishes the will (OFFLINE) after the keepalive runs out.
      await w.nodeReady(name, "False", 60_000);
    }),
});

Deno.test({
  name:
    "e2e: two active replicas; SIGKILL of the one serving a device moves it to the other: Ready, exec works, no container restarted",
  ...TEST,
  fn: () =>
    inWorld(async (w, _cluster, services) => {
      const members = uniqueName("aranya-members");
      const ports = [freePort(), freePort()];
      const httpPorts = [freePort(), freePort()];
      const kubeletPorts = [freePortRange(8), freePortRange(8)];
      const replicas: AranyaProcess[] = [];
      for (const i of [0, 1]) {
        replicas.push(
          await w.startAranya(aranyaConfigYaml({
            kubeconfig: w.kubeconfig,
            namespaces: [w.ns],
            httpPort: httpPorts[i]!,
            websocket: {
              port: ports[i]!,
              certFile: `${w.dir}/tls.crt`,
              keyFile: `${w.dir}/tls.key`,
            },
            kubelet: { port: kubeletPorts[i]!, portCount: 8 },
            node: { heartbeat: "1s", leaseDuration: "10s" },
            membership: {
              name: members,
              identity: `replica-${i}`,
              leaseDuration: "4s",
              renewDeadline: "3s",
              retryPeriod: "1s",
            },
          })),
        );
      }
      // Both serve: Ready, and each sees the other as a member.
      for (const i of [0, 1]) {
        await waitAranyaReady(replicas[i]!, httpPorts[i]!);
        await eventually(`replica-${i} to see two members`, async () => {
          const m = await (await fetch(`http://127.0.0.1:${httpPorts[i]}/metrics`)).text();
          return /^aranya_replica_members 2$/m.test(m) ? true : undefined;
        }, 20_000);
      }
      const inRange = (port: number, i: number) =>
        port >= kubeletPorts[i]! && port < kubeletPorts[i]! + 8;
      const served = async (name: string) => {
        const node = await w.json(["get", "node", name]);
        const lease = await w.json(["get", "lease", "-n", "kube-node-lease", name]);
        const ready = node.status?.conditions?.find((c: { type: string }) => c.type === "Ready");
        return {
          port: node.status?.daemonEndpoints?.kubeletEndpoint?.Port as number,
          holder: lease.spec?.holderIdentity as string,
          ready: ready?.status as string,
        };
      };

      const name = uniqueName("ha");
      const token = await w.createDevice(name);
      // The device lists both replicas, as it would reach them through one Service.
      await w.startArhat(
        name,
        websocketMethod(ports[0]!, token, `${w.arhatDir}/ca.crt`) +
          websocketMethod(ports[1]!, token, `${w.arhatDir}/ca.crt`),
      );
      await w.nodeReady(name, "True");
      const first = await served(name);
      assert.equal(first.holder, "replica-0", "the replica holding the link owns the device");
      assert.ok(inRange(first.port, 0), `the Node's kubelet port ${first.port} is replica-0's`);
      await w.kubectl(
        ["apply", "-f", "-"],
        await sampleWorkload(name, services.endpoints.testImage),
      );
      const pod = await w.runningPod("app=edge-demo");
      const [ctr] = await w.appContainers(pod.metadata.uid);
      const exec = () =>
        w.kubectl([
          "exec",
          pod.metadata.name,
          "-c",
          pod.spec.containers[0].name,
          "--",
          "echo",
          "hi",
        ]);
      assert.equal((await exec()).trim(), "hi");

      const killedAt = Date.now();
      await replicas[0]!.kill("SIGKILL");
      // replica-1 takes the device once replica-0's membership ran out (4 s), and serves its
      // Node on one of its own ports.
      const after = await eventually("the device served by replica-1", async () => {
        const s = await served(name).catch(() => undefined);
        return s?.holder === "replica-1" && s.ready === "True" && inRange(s.port, 1)
          ? s
          : undefined;
      }, 60_000);
      console.log(
        `failover: ${(Date.now() - killedAt) / 1000} s from SIGKILL to Ready on replica-1`,
      );
      assert.ok(inRange(after.port, 1));
      await eventually("replica-1 to count the device", async () => {
        const m = await (await fetch(`http://127.0.0.1:${httpPorts[1]}/metrics`)).text();
        return /^aranya_devices_connected 1$/m.test(m) ? true : undefined;
      }, 30_000);
      // The kubelet API through replica-1: exec and logs work.
      assert.equal(
        (await eventually("exec through replica-1", async () => {
          try {
            return await exec();
          } catch {
            return undefined;
          }
        }, 30_000)).trim(),
        "hi",
      );
      // Nothing restarted on the device.
      assert.deepEqual((await w.appContainers(pod.metadata.uid)).map((c) => c.Id), [ctr!.Id]);
      const again = await w.json(["get", "pod", pod.metadata.name]);
      assert.equal(again.status.containerStatuses[0].restartCount, 0);
      // replica-0's share of the EdgeDevices moved too: a new device is provisioned by replica-1
      // whichever share its key falls in.
      const later = [uniqueName("ha"), uniqueName("ha"), uniqueName("ha")];
      for (const d of later) await w.createDevice(d);
    }),
});
