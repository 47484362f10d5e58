/**
 * OCI image archives made here, for `ctr images import` on a worker node: an
 * OCI image layout (blobs, index.json, oci-layout) packed into one tar. Each
 * image is one uncompressed layer and a config; the index names each with
 * containerd's `io.containerd.image.name`. Nothing is pulled or pushed.
 */
import { sha256Hex } from "@aranya/common/digest";
import { ensureDir, removeAll } from "../paths.ts";
import { run } from "../process.ts";

/** The PATH an image's config gives its processes. */
export const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/** One image of an archive. */
export interface OciImage {
  /** Full reference, e.g. "ghcr.io/arhat-dev/aranya:0.1.0". */
  name: string;
  /** The layer: an uncompressed tar of the root file system. */
  layer: Uint8Array;
  /** The config's `config` object (User, Env, Entrypoint, Cmd, WorkingDir ...). */
  config: Record<string, unknown>;
}

/**
 * Writes `images` as one OCI archive into `dir` (a scratch folder it fills) and returns the
 * archive's path, `<dir>/images.tar`. Images with the same layer bytes share its blob.
 */
export async function writeOciArchive(dir: string, images: OciImage[]): Promise<string> {
  const layout = `${dir}/oci`;
  await removeAll(layout);
  const blobs = await ensureDir(`${layout}/blobs/sha256`);
  const put = async (mediaType: string, bytes: Uint8Array): Promise<Blob> => {
    const hex = sha256Hex(bytes);
    await Deno.writeFile(`${blobs}/${hex}`, bytes);
    return { mediaType, digest: `sha256:${hex}`, size: bytes.byteLength };
  };
  const putJson = (mediaType: string, value: unknown) =>
    put(mediaType, new TextEncoder().encode(JSON.stringify(value)));
  const platform = { architecture: ociArch(), os: "linux" };

  const manifests = [];
  for (const image of images) {
    const layer = await put("application/vnd.oci.image.layer.v1.tar", image.layer);
    const config = await putJson("application/vnd.oci.image.config.v1+json", {
      ...platform,
      config: image.config,
      rootfs: { type: "layers", diff_ids: [layer.digest] },
    });
    const manifest = await putJson("application/vnd.oci.image.manifest.v1+json", {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config,
      layers: [layer],
    });
    manifests.push({
      ...manifest,
      platform,
      annotations: {
        "io.containerd.image.name": image.name,
        "org.opencontainers.image.ref.name": image.name.slice(image.name.lastIndexOf(":") + 1),
      },
    });
  }
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
