/**
 * An exec whose client goes away (the handle closed, or its signal aborted)
 * does not leave its process running in the container, on Podman and dockerd.
 */
import assert from "node:assert/strict";
import { eventually, uniqueName, useServices } from "@aranya/e2e/fixtures";
import { DockerRuntime } from "./docker_runtime.ts";
import { createLogger } from "@aranya/common/log";

for (const engine of ["podman", "docker"] as const) {
  Deno.test(`${engine}: a closed exec's process is ended`, async () => {
    const services = await useServices();
    const e = services.endpoints;
    const rt = new DockerRuntime({
      socket: engine === "docker" ? e.dockerSocket : e.podmanSocket,
      log: createLogger({ level: "warn" }),
    });
    const id = await rt.createContainer({
      name: uniqueName("cancel"),
      image: e.testImage,
      network: "none",
      cmd: ["sleep", "3600"],
      labels: { "aranya.test": "exec-cancel" },
      stopTimeoutSeconds: 1,
    });
    try {
      await rt.startContainer(id);
      const running = async () => {
        const h = await rt.exec(id, { cmd: ["sh", "-c", "ps -o args | grep -c '^sleep 4242$'"] });
        let out = "";
        for await (const c of h.output) out += new TextDecoder().decode(c.data);
        await h.exitCode.catch(() => {});
        return Number(out.trim());
      };
      const ac = new AbortController();
      const h = await rt.exec(id, { cmd: ["sleep", "4242"], signal: ac.signal });
      await eventually("the exec'd process runs", async () => (await running()) === 1 || undefined);
      ac.abort();
      await assert.rejects(h.exitCode, /closed before the process ended/);
      await eventually(
        "the exec'd process is gone",
        async () => (await running()) === 0 || undefined,
        10_000,
      );
    } finally {
      await rt.removeContainer(id).catch(() => {});
      await services.release();
    }
  });
}
