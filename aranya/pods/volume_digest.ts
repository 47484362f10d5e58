/**
 * A digest of the volume contents of a resolved pod (names, sources, every
 * file's path, mode and bytes): what the device holds for the pod's volumes.
 * A running pod is sent again (same spec hash: the device rewrites its files
 * in place, nothing restarts) only when this digest changed.
 *
 * @module
 */
import { sha256Hex } from "@aranya/common/digest";
import type { PodEnsureCmd } from "@aranya/proto/gen/aranya/pod_pb";

/** Digest of `cmd`'s volumes. */
export function volumeDigest(cmd: Pick<PodEnsureCmd, "volumes">): string {
  const parts: string[] = [];
  for (const v of cmd.volumes) {
    const s = v.source;
    if (s.case === "data") {
      const files = s.value.files.map((f) => [f.path, f.mode, sha256Hex(f.data)]);
      parts.push(JSON.stringify([v.name, "data", files]));
    } else {
      // Sources other than files are small messages; 64-bit fields (a memory emptyDir's
      // size limit) are bigints, which JSON has no form for.
      parts.push(
        JSON.stringify(
          [v.name, s.case ?? "", s.value ?? null],
          (_k, x) => typeof x === "bigint" ? x.toString() : x,
        ),
      );
    }
  }
  return sha256Hex(parts.join("\n"));
}
