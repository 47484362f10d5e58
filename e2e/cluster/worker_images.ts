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
 * Both share one uncompressed layer. `ctr images import` reads the archive; the
 * index names each image with containerd's `io.containerd.image.name`.
 */
import { sha256Hex } from "@aranya/common/digest";
import { ensureDir, removeAll } from "../paths.ts";
import { run } from "../process.ts";
import { buildRootfsTar, TEST_IMAGE } from "../services/test_image.ts";

export { TEST_IMAGE };

/** The worker node's sandbox image (containerd's `sandbox_image`). */
export const PAUSE_IMAGE = "localhost/aranya-e2e/pause:test";

const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** One content-addressed blob of the archive. */
interface Blob {
  mediaType: string;
  digest: string;
  size: number;
}

/** The OCI architecture name of this machine ("amd64", "arm64"). */
export function ociArch(arch: string = Deno.build.arch): string {
  switch (arch) {
    case "x86_64":
      return "amd64";
    case "aarch64":
      return "arm64";
    default:
      throw new Error(`No OCI architecture known for "${arch}"`);
  }
}

/**
 * Writes the OCI archive holding {@link TEST_IMAGE} and {@link PAUSE_IMAGE}
 * into `dir` (a scratch folder it fills) and returns the archive's path.
 */
export async function writeWorkerImages(dir: string): Promise<string> {
  const layout = `${dir}/oci`;
  await removeAll(layout);
  const blobs = await ensureDir(`${layout}/blobs/sha256`);
  const putJson = async (mediaType: string, value: unknown): Promise<Blob> => {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    const hex = sha256Hex(bytes);
    await Deno.writeFile(`${blobs}/${hex}`, bytes);
    return { mediaType, digest: `sha256:${hex}`, size: bytes.byteLength };
  };

  const rootfs = await buildRootfsTar();
  const layerHex = sha256Hex(rootfs);
  await Deno.writeFile(`${blobs}/${layerHex}`, rootfs);
  const layer: Blob = {
    mediaType: "application/vnd.oci.image.layer.v1.tar",
    digest: `sha256:${layerHex}`,
    size: rootfs.byteLength,
  };
  const platform = { architecture: ociArch(), os: "linux" };

  const image = async (name: string, entrypoint?: string[]) => {
    const config = await putJson("application/vnd.oci.image.config.v1+json", {
      ...platform,
      config: { Env: [DEFAULT_PATH], ...(entrypoint ? { Entrypoint: entrypoint } : {}) },
      rootfs: { type: "layers", diff_ids: [layer.digest] },
    });
    const manifest = await putJson("application/vnd.oci.image.manifest.v1+json", {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers: [layer],
    });
    return {
      ...manifest,
      platform,
      annotations: {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.slice(name.lastIndexOf(":") + 1),
      },
    };
  };
  const manifests = [await image(TEST_IMAGE), await image(PAUSE_IMAGE, ["/bin/sleep", "infinity"])];
  await Deno.writeTextFile(
    `${layout}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests,
    }),
  );
  await Deno.writeTextFile(`${layout}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const archive = `${dir}/images.tar`;
  await run("tar", ["-C", layout, "-cf", archive, "oci-layout", "index.json", "blobs"]);
  await removeAll(layout);
  return archive;
}
