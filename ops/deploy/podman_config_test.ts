import assert from "node:assert/strict";
import { EXIT_COMMAND_DELAY_S, podmanDropIn, usesPodman } from "./podman_config.ts";

Deno.test("podman: the engine is told by the socket's file name", () => {
  assert.equal(usesPodman("unix:///run/podman/podman.sock"), true);
  assert.equal(usesPodman("unix:///tmp/x/podman.sock"), true);
  assert.equal(usesPodman("unix:///var/run/docker.sock"), false);
  assert.equal(usesPodman("unix:///run/podman-things/docker.sock"), false);
});

Deno.test("podman: the drop-in sets exit_command_delay under [engine]", () => {
  const lines = podmanDropIn().split("\n").filter((l) => l && !l.startsWith("#"));
  assert.deepEqual(lines, ["[engine]", `exit_command_delay = ${EXIT_COMMAND_DELAY_S}`]);
});
