/**
 * DockerRuntime.stats against the real engines, Podman's compatible service
 * and dockerd (see e2e/services): one reading of a running container, CPU
 * time that grows, the working set without inactive page cache, and the
 * errors for stopped and missing containers. Containers carry the label
 * `aranya.test=docker-runtime-stats` and are removed after each test.
 */
import assert from "node:assert/strict";
import { InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { uniqueName, useServices } from "@aranya/e2e/fixtures";
import type { ContainerSpec } from "../runtime.ts";
import { DockerRuntime } from "./docker_runtime.ts";

const LABEL = "aranya.test";
const LABEL_VALUE = "docker-runtime-stats";
const MiB = 1024 * 1024;

for (const engine of ["podman", "docker"] as const) {
  Deno.test(`${engine}: DockerRuntime.stats`, async (t) => {
    const services = await useServices();
    const e = services.endpoints;
    const rt = new DockerRuntime({
      socket: engine === "docker" ? e.dockerSocket : e.podmanSocket,
    });
    const run = async (script: string): Promise<string> => {
      const spec: ContainerSpec = {
        name: uniqueName("drs"),
        image: e.testImage,
        network: "none",
        cmd: ["sh", "-c", script],
        labels: { [LABEL]: LABEL_VALUE },
        stopTimeoutSeconds: 1,
      };
      const id = await rt.createContainer(spec);
      await rt.startContainer(id);
      return id;
    };
    try {
      await t.step("a running container: one reading, CPU time grows", async () => {
        // Busy for a moment at start, then idle; a 32 MiB file leaves page cache behind.
        const id = await run(
          "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; " +
            "dd if=/dev/zero of=/tmp/cache bs=1048576 count=32 2>/dev/null; " +
            "touch /tmp/ready; exec sleep 3600",
        );
        const before = Date.now();
        const first = await rt.stats(id);
        assert.ok(
          Math.abs(first.timeMs - before) < 60_000,
          `read time ${new Date(first.timeMs).toISOString()}`,
        );
        assert.ok(first.cpuUsageCoreNanoseconds > 0, `cpu ${first.cpuUsageCoreNanoseconds}`);
        assert.ok(first.memoryWorkingSetBytes > 0, `working set ${first.memoryWorkingSetBytes}`);
        assert.ok(first.memoryWorkingSetBytes <= first.memoryUsageBytes);
        // Busy loop in an exec: the container's CPU time grows by at least 50 ms.
        const h = await rt.exec(id, {
          cmd: ["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"],
        });
        for await (const _ of h.output) { /* drain */ }
        assert.equal(await h.exitCode, 0);
        const second = await rt.stats(id);
        assert.ok(second.timeMs >= first.timeMs);
        assert.ok(
          second.cpuUsageCoreNanoseconds - first.cpuUsageCoreNanoseconds > 50_000_000,
          `cpu ${first.cpuUsageCoreNanoseconds} -> ${second.cpuUsageCoreNanoseconds}`,
        );
        if (engine === "docker") {
          // dockerd reports page cache in usage and the breakdown: the working set leaves
          // the file just written (inactive file pages) out; rss is reported.
          assert.ok(
            second.memoryUsageBytes - second.memoryWorkingSetBytes >= 16 * MiB,
            `usage ${second.memoryUsageBytes}, working set ${second.memoryWorkingSetBytes}`,
          );
          assert.ok(second.memoryRssBytes !== undefined && second.memoryRssBytes > 0);
        } else {
          // Podman gives no breakdown: the working set is its usage (page cache included on
          // cgroup v1, left out on v2) and rss is unknown.
          assert.equal(second.memoryWorkingSetBytes, second.memoryUsageBytes);
          assert.equal(second.memoryRssBytes, undefined);
        }
      });

      await t.step(
        "a stopped container is InvalidInputError, a missing one NotFoundError",
        async () => {
          const id = await run("exit 0");
          await rt.waitContainer(id);
          await assert.rejects(rt.stats(id), (err: unknown) => {
            assert.ok(err instanceof InvalidInputError, String(err));
            assert.equal(
              err.message,
              `Reading the stats of container "${id}" failed: it is not running`,
            );
            return true;
          });
          await assert.rejects(rt.stats("aranya-no-such-container"), (err: unknown) => {
            assert.ok(err instanceof NotFoundError, String(err));
            assert.match(
              err.message,
              /^Reading the stats of container "aranya-no-such-container" failed/,
            );
            return true;
          });
        },
      );
    } finally {
      try {
        for (const c of await rt.listContainers({ [LABEL]: LABEL_VALUE })) {
          await rt.removeContainer(c.id);
        }
      } finally {
        rt.close();
        await services.release();
      }
    }
  });
}
