import assert from "node:assert/strict";
import { ARM64_PACKAGES, foreignArchitectures, HOST_PACKAGES } from "./host_setup.ts";

Deno.test("host setup: packages of another architecture name the dpkg architecture to add", () => {
  assert.deepEqual(foreignArchitectures(["podman", "tar"], "amd64"), []);
  assert.deepEqual(
    foreignArchitectures(["qemu-user-static", "libc6:arm64", "libgcc-s1:arm64"], "amd64"),
    ["arm64"],
  );
  assert.deepEqual(foreignArchitectures(["libc6:amd64", "x:all", "y:armhf"], "amd64"), ["armhf"]);
  // The arm64 device test's packages are part of every setup.
  for (const name of Object.keys(ARM64_PACKAGES)) assert.ok(name in HOST_PACKAGES, name);
  assert.deepEqual(foreignArchitectures(Object.keys(HOST_PACKAGES), "amd64"), ["arm64"]);
});
