/**
 * The images a worker node's containerd starts with, as one OCI image archive
 * made here from the project's busybox rootfs (e2e/services/test_image.ts):
 * nothing is pulled.
 *
 * - {@link TEST_IMAGE}: the test image the engines have, under the same name,
 *   with an empty config but for `PATH` (an engine's `import` adds no more, and
 *   Docker and Podman supply the same default PATH at run time).
 * - {@link PAUSE_IMAGE}: the sandbox ("pause") image containerd's CRI plugin
 *   needs for every pod. Upstream's pause binary is not available here, so it
 *   is the same busybox layer with `sleep infinity` as its entrypoint.
 *
 * Both share one uncompressed layer (oci_archive.ts).
 */
import { buildRootfsTar, TEST_IMAGE } from "../services/test_image.ts";
import { DEFAULT_PATH, writeOciArchive } from "./oci_archive.ts";

export { TEST_IMAGE };

/** The worker node's sandbox image (containerd's `sandbox_image`). */
export const PAUSE_IMAGE = "localhost/aranya-e2e/pause:test";

/**
 * Writes the OCI archive holding {@link TEST_IMAGE} and {@link PAUSE_IMAGE}
 * into `dir` (a scratch folder it fills) and returns the archive's path.
 */
export async function writeWorkerImages(dir: string): Promise<string> {
  const layer = await buildRootfsTar();
  return await writeOciArchive(dir, [
    { name: TEST_IMAGE, layer, config: { Env: [DEFAULT_PATH] } },
    {
      name: PAUSE_IMAGE,
      layer,
      config: { Env: [DEFAULT_PATH], Entrypoint: ["/bin/sleep", "infinity"] },
    },
  ]);
}
