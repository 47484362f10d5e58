/**
 * Podman fails a whole container list when one container is removed while it lists; the
 * runtime asks again. Against a stand-in engine on a Unix socket (Podman's race cannot be
 * caused at will; the real engines run the rest of DockerRuntime's tests).
 */
import assert from "node:assert/strict";
import { InternalError } from "@aranya/common/errors";
import { DockerRuntime } from "./docker_runtime.ts";

async function standInEngine(failures: number) {
  const dir = ".cache/tmp";
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/list-retry-${crypto.randomUUID().slice(0, 8)}.sock`;
  let lists = 0;
  const server = Deno.serve({ path, onListen: () => {} }, (req) => {
    if (!new URL(req.url).pathname.endsWith("/containers/json")) {
      return new Response("{}", { status: 404 });
    }
    lists++;
    if (lists <= failures) {
      return Response.json({
        cause: "container not known",
        message: 'getting container from store "551e22fd": container not known',
        response: 500,
      }, { status: 500 });
    }
    return Response.json([]);
  });
  return {
    path,
    lists: () => lists,
    stop: async () => {
      await server.shutdown();
      await Deno.remove(path).catch(() => {});
    },
  };
}

Deno.test("a list Podman failed on a container removed meanwhile is asked again", async () => {
  const engine = await standInEngine(2);
  const rt = new DockerRuntime({ socket: engine.path });
  try {
    assert.deepEqual(await rt.listContainers({ "arhat.dev/managed": "true" }), []);
    assert.equal(engine.lists(), 3);
  } finally {
    rt.close();
    await engine.stop();
  }
});

Deno.test("a list that keeps failing fails after three attempts, with the engine's message", async () => {
  const engine = await standInEngine(10);
  const rt = new DockerRuntime({ socket: engine.path });
  try {
    await assert.rejects(
      rt.listContainers(),
      (err) => err instanceof InternalError && /container not known/.test(err.message),
    );
    assert.equal(engine.lists(), 3);
  } finally {
    rt.close();
    await engine.stop();
  }
});
