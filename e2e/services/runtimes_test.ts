/**
 * The container engines and the registry are real: Podman and dockerd each
 * run the local test image, and a pull from the local registry works with the
 * right credentials and fails clearly with wrong ones.
 */
import assert from "node:assert/strict";
import { useServices } from "../fixtures.ts";
import { EngineClient, registryImage, TEST_IMAGE_TAG } from "./mod.ts";

Deno.test("container engines and registry", async (t) => {
  const services = await useServices();
  const e = services.endpoints;
  const engines = [
    { name: "podman", socket: e.podmanSocket },
    { name: "docker", socket: e.dockerSocket },
  ];
  try {
    for (const engine of engines) {
      const client = new EngineClient(engine.socket);
      try {
        await t.step(`${engine.name} runs the local test image`, async () => {
          const r = await client.runToCompletion(e.testImage, [
            "sh",
            "-c",
            "echo hello-from-$(uname -s); exit 7",
          ]);
          assert.equal(r.code, 7);
          assert.match(r.output, /hello-from-Linux/);
        });

        const repo = registryImage(e.registry);
        await t.step(
          `${engine.name} pulls from the registry with the right credentials`,
          async () => {
            await client.removeImage(`${repo}:${TEST_IMAGE_TAG}`);
            assert.equal(await client.hasImage(`${repo}:${TEST_IMAGE_TAG}`), false);
            const r = await client.pull(repo, TEST_IMAGE_TAG, {
              username: e.registryUser,
              password: e.registryPassword,
              serveraddress: e.registry,
            });
            assert.ok(r.ok, `pull failed: ${r.error}`);
            assert.equal(await client.hasImage(`${repo}:${TEST_IMAGE_TAG}`), true);
            const run = await client.runToCompletion(`${repo}:${TEST_IMAGE_TAG}`, [
              "echo",
              "pulled",
            ]);
            assert.match(run.output, /pulled/);
          },
        );

        await t.step(`${engine.name} refuses the pull with wrong credentials`, async () => {
          await client.removeImage(`${repo}:${TEST_IMAGE_TAG}`);
          const r = await client.pull(repo, TEST_IMAGE_TAG, {
            username: e.registryUser,
            password: "wrong-password",
            serveraddress: e.registry,
          });
          assert.equal(r.ok, false, "a pull with a wrong password must fail");
          assert.match(r.error ?? "", /unauthorized|authentication required|401/i, r.error ?? "");
          assert.equal(await client.hasImage(`${repo}:${TEST_IMAGE_TAG}`), false);
          const anonymous = await client.pull(repo, TEST_IMAGE_TAG);
          assert.equal(anonymous.ok, false, "an anonymous pull must fail");
        });
      } finally {
        client.close();
      }
    }
  } finally {
    await services.release();
  }
});
