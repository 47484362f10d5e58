/**
 * Pod volumes on the device: Secret, ConfigMap, downward API and projected
 * data arrive resolved as files and are written under the state dir,
 * atomically (a new folder is filled, then renamed over the old one), with
 * their modes; emptyDir is a folder there too; hostPath is used as given.
 */
import { InvalidInputError } from "../../common/errors.ts";
import type { Volume } from "../../proto/gen/aranya/pod_pb.ts";

/** Where a pod's volumes live. */
export function podDir(stateDir: string, uid: string): string {
  return `${stateDir}/pods/${uid}`;
}

function checkRelative(path: string, what: string): void {
  if (path.startsWith("/") || path.split("/").some((p) => p === "..")) {
    throw new InvalidInputError(`${what} "${path}" must be a relative path without ".."`);
  }
}

/**
 * Materializes every volume of a pod; returns volume name -> host path.
 * Rewriting the same data is safe: readers see the old or the new folder,
 * never a half-written one.
 */
export async function writeVolumes(
  stateDir: string,
  uid: string,
  volumes: Volume[],
): Promise<Map<string, string>> {
  const base = `${podDir(stateDir, uid)}/volumes`;
  await Deno.mkdir(base, { recursive: true });
  const paths = new Map<string, string>();
  for (const v of volumes) {
    checkRelative(v.name, "Volume name");
    const target = `${base}/${v.name}`;
    switch (v.source.case) {
      case "hostPath":
        paths.set(v.name, v.source.value);
        break;
      case "emptyDir":
        await Deno.mkdir(target, { recursive: true });
        paths.set(v.name, target);
        break;
      case "data": {
        const tmp = `${base}/.${v.name}.${crypto.randomUUID().slice(0, 8)}`;
        await Deno.mkdir(tmp, { recursive: true });
        for (const f of v.source.value.files) {
          checkRelative(f.path, `File of volume "${v.name}"`);
          const file = `${tmp}/${f.path}`;
          await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
          await Deno.writeFile(file, f.data, { mode: f.mode || 0o644 });
          await Deno.chmod(file, f.mode || 0o644);
        }
        // Swap: move the old folder aside, the new one in, then drop the old.
        const old = `${base}/.${v.name}.old-${crypto.randomUUID().slice(0, 8)}`;
        const hadOld = await Deno.rename(target, old).then(() => true, () => false);
        await Deno.rename(tmp, target);
        if (hadOld) await Deno.remove(old, { recursive: true }).catch(() => {});
        paths.set(v.name, target);
        break;
      }
      default:
        throw new InvalidInputError(`Volume "${v.name}" has no source`);
    }
  }
  return paths;
}

/** Removes a pod's folder (volumes and all). */
export async function removePodDir(stateDir: string, uid: string): Promise<void> {
  await Deno.remove(podDir(stateDir, uid), { recursive: true }).catch(() => {});
}
