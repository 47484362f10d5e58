/**
 * CMD_STATS_GET through arhat's dispatch table and the session layer, on real
 * Podman and real dockerd: a pod with an init container and two app
 * containers, the host's node figures, CPU time and rates across two
 * requests, and a malformed payload refused.
 */
import assert from "node:assert/strict";
import { create, fromBinary } from "@bufbuild/protobuf";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { InvalidInputError } from "@aranya/common/errors";
import { memoryLinkPair } from "@aranya/common/testing/memory_link";
import { SessionClient } from "@aranya/common/session/session_client";
import { SessionServer } from "@aranya/common/session/session_server";
import { eventually, useServices } from "@aranya/e2e/fixtures";
import { CACHE } from "@aranya/e2e/paths";
import {
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import { type StatsMsg, StatsMsgSchema } from "@aranya/proto/gen/aranya/stats_pb";
import { PodManager } from "../pods/pod_manager.ts";
import { DockerRuntime } from "../runtime/docker/docker_runtime.ts";
import { Agent } from "./agent.ts";
import { createStatsSource, statsHandlers } from "./handle_stats.ts";

async function getStats(client: SessionClient): Promise<StatsMsg> {
  const reply = await client.request(CmdKind.CMD_STATS_GET, new Uint8Array());
  assert.equal(reply.kind, MsgKind.MSG_STATS);
  return fromBinary(StatsMsgSchema, reply.payload);
}

for (const engine of ["podman", "docker"] as const) {
  Deno.test(`${engine}: CMD_STATS_GET reports the node and the pod's running containers`, async () => {
    const services = await useServices();
    const e = services.endpoints;
    const rt = new DockerRuntime({ socket: engine === "docker" ? e.dockerSocket : e.podmanSocket });
    const stateDir = `${CACHE}/test-stats/${crypto.randomUUID()}`;
    await Deno.mkdir(stateDir, { recursive: true });
    const pm = new PodManager({
      runtime: rt,
      stateDir,
      infraImage: e.testImage,
      syncIntervalMs: 200,
    });
    const ac = new AbortController();
    const running = pm.run(ac.signal);
    const [cloud, device] = memoryLinkPair("edge/stats-device");
    const agent = new Agent().register(
      statsHandlers(createStatsSource({ runtime: rt, pods: pm, stateDir })),
    );
    const server = new SessionServer(device, { dispatcher: agent });
    const client = new SessionClient(cloud, { unaryTimeoutMs: 30_000 });
    server.start();
    client.start();
    const uid = crypto.randomUUID();
    try {
      const startedBefore = Date.now() - 1000;
      await pm.ensure(create(PodEnsureCmdSchema, {
        uid,
        namespace: "edge",
        name: "stats-pod",
        restartPolicy: RestartPolicy.ALWAYS,
        specHash: "v1",
        terminationGraceSeconds: 1n,
        initContainers: [{ name: "init", image: e.testImage, command: ["true"] }],
        containers: [
          { name: "app", image: e.testImage, command: ["sh", "-c", "sleep 3600"] },
          { name: "sidecar", image: e.testImage, command: ["sh", "-c", "sleep 3600"] },
        ],
      }));
      await eventually("the pod to run", async () => {
        const s = await pm.status(uid);
        return s.phase === PodStatusMsg_Phase.RUNNING &&
            s.containers.filter((c) => !c.init && c.startedAt).length === 2
          ? s
          : undefined;
      });

      const first = await getStats(client);
      const node = first.node!;
      assert.ok(node.startTimeUnixMs > 0n && node.startTimeUnixMs < BigInt(Date.now()));
      assert.ok(node.cpu && node.cpu.usageCoreNanoseconds > 0n);
      assert.ok(
        node.memory && node.memory.workingSetBytes > 0n && node.memory.availableBytes! > 0n,
      );
      assert.ok(node.fs && node.fs.capacityBytes > 0n && node.fs.usedBytes > 0n);
      const pod = first.pods.find((p) => p.podUid === uid);
      assert.ok(pod, `pod ${uid} in ${first.pods.map((p) => p.podUid)}`);
      assert.equal(pod.namespace, "edge");
      assert.equal(pod.name, "stats-pod");
      assert.ok(pod.startTimeUnixMs >= BigInt(startedBefore), `pod start ${pod.startTimeUnixMs}`);
      // The finished init container and the infra container are not reported.
      assert.deepEqual(pod.containers.map((c) => c.name).sort(), ["app", "sidecar"]);
      for (const c of pod.containers) {
        assert.ok(c.startTimeUnixMs >= BigInt(startedBefore), `${c.name} start`);
        assert.ok(c.cpu && c.cpu.usageCoreNanoseconds > 0n, `${c.name} cpu`);
        assert.equal(c.cpu.usageNanoCores, undefined, "no rate on the first reading");
        assert.ok(c.memory && c.memory.workingSetBytes > 0n, `${c.name} memory`);
        assert.ok(c.memory.workingSetBytes <= c.memory.usageBytes);
        assert.equal(c.memory.availableBytes, undefined);
        assert.ok(Math.abs(Number(c.cpu.timeUnixMs) - Date.now()) < 60_000);
      }

      // Keep "app" busy for a moment: its CPU time and rate show it.
      const app = await pm.findContainer(uid, "app");
      const h = await rt.exec(app.id, {
        cmd: ["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"],
      });
      for await (const _ of h.output) { /* drain */ }
      assert.equal(await h.exitCode, 0);
      const second = await getStats(client);
      const before = pod.containers.find((c) => c.name === "app")!;
      const after = second.pods.find((p) => p.podUid === uid)!.containers.find((c) =>
        c.name === "app"
      )!;
      assert.ok(
        after.cpu!.usageCoreNanoseconds - before.cpu!.usageCoreNanoseconds > 50_000_000n,
        `app cpu ${before.cpu!.usageCoreNanoseconds} -> ${after.cpu!.usageCoreNanoseconds}`,
      );
      assert.ok(after.cpu!.usageNanoCores! > 0n, `app rate ${after.cpu!.usageNanoCores}`);
      assert.ok(second.node!.cpu!.usageNanoCores! > 0n, "node rate");

      await assert.rejects(
        client.request(CmdKind.CMD_STATS_GET, new Uint8Array([0xff, 0xff])),
        (err: unknown) =>
          err instanceof InvalidInputError && /^Malformed StatsGetCmd: /.test(err.message),
      );
    } finally {
      cloud.close();
      ac.abort();
      await running;
      await pm.delete(uid, 0).catch(() => {});
      rt.close();
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
      await services.release();
    }
  });
}
