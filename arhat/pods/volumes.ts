/**
 * Pod volumes on the device: Secret, ConfigMap, downward API and projected
 * data arrive resolved as files and are written under the state dir with
 * their modes; emptyDir is a folder there too; hostPath is used as given.
 *
 * The folders above a volume (`pods/`, `pods/<uid>/`, `.../volumes/`) are
 * 0700: Secret values and service account tokens are out of reach of every
 * other user of the device. A container sees only the bind-mounted volume
 * folder itself, so files keep the modes the pod asked for (defaultMode,
 * items[].mode) and non-root containers can still read them.
 *
 * A volume's folder is bind-mounted into running containers, so it must keep
 * its identity: it is never replaced, only its files are. Each changed file
 * is written beside its target and renamed over it (readers see the old or the
 * new file, never half of one); unchanged files are not touched, and files
 * that left the volume are removed. (The kubelet swaps a `..data` symlink
 * instead, for whole-volume atomicity; Deno allows creating symlinks only with
 * unscoped permissions, which arhat does not have.)
 */
import { InvalidInputError } from "@aranya/common/errors";
import type { Volume, VolumeFile } from "@aranya/proto/gen/aranya/pod_pb";

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
  opts: { fsGroup?: number } = {},
): Promise<Map<string, string>> {
  const base = `${podDir(stateDir, uid)}/volumes`;
  await Deno.mkdir(base, { recursive: true, mode: 0o700 });
  // Folders made by an earlier arhat (or under another umask) are closed too.
  for (const dir of [`${stateDir}/pods`, podDir(stateDir, uid), base]) await Deno.chmod(dir, 0o700);
  const paths = new Map<string, string>();
  for (const v of volumes) {
    checkRelative(v.name, "Volume name");
    const target = `${base}/${v.name}`;
    switch (v.source.case) {
      case "hostPath":
        await prepareHostPath(v.source.value, v.hostPathType);
        paths.set(v.name, v.source.value);
        break;
      case "emptyDir":
        // World-writable like the kubelet's, so containers of any user can use it; with an
        // fsGroup the group owns it and new files inherit the group (setgid).
        await Deno.mkdir(target, { recursive: true });
        if (opts.fsGroup !== undefined) await Deno.chown(target, null, opts.fsGroup);
        await Deno.chmod(target, opts.fsGroup !== undefined ? 0o2777 : 0o777);
        paths.set(v.name, target);
        break;
      case "data": {
        await writeDataVolume(target, v.name, v.source.value.files, opts.fsGroup);
        paths.set(v.name, target);
        break;
      }
      case "memoryDir":
        // An engine volume (tmpfs), made by the pod manager: nothing on disk.
        break;
      default:
        throw new InvalidInputError(`Volume "${v.name}" has no source`);
    }
  }
  return paths;
}

/** Brings the files under `dir` to exactly `files`, touching only what changed. */
async function writeDataVolume(
  dir: string,
  name: string,
  files: VolumeFile[],
  fsGroup: number | undefined,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const want = new Set<string>();
  for (const f of files) {
    checkRelative(f.path, `File of volume "${name}"`);
    want.add(f.path);
    const file = `${dir}/${f.path}`;
    // With an fsGroup, the group owns the file and may read it (the kubelet's read-only mask).
    const mode = fsGroup === undefined ? f.mode || 0o644 : (f.mode || 0o644) | 0o440;
    const same = await Promise.all([Deno.readFile(file), Deno.stat(file)]).then(
      ([data, st]) =>
        equalBytes(data, f.data) && (st.mode ?? 0) % 0o1000 === mode &&
        (fsGroup === undefined || st.gid === fsGroup),
      () => false,
    );
    if (same) continue;
    const folder = file.slice(0, file.lastIndexOf("/"));
    await Deno.mkdir(folder, { recursive: true });
    const tmp = `${folder}/.tmp-${crypto.randomUUID().slice(0, 8)}`;
    await Deno.writeFile(tmp, f.data, { mode });
    if (fsGroup !== undefined) await Deno.chown(tmp, null, fsGroup);
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, file);
  }
  await removeOthers(dir, "", want);
}

/** Removes files under `dir` whose relative path is not in `keep` (and then-empty folders). */
async function removeOthers(dir: string, rel: string, keep: Set<string>): Promise<boolean> {
  let empty = true;
  for await (const e of Deno.readDir(rel ? `${dir}/${rel}` : dir)) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) {
      if (await removeOthers(dir, path, keep)) {
        await Deno.remove(`${dir}/${path}`).catch(() => {});
      } else empty = false;
    } else if (!keep.has(path)) {
      await Deno.remove(`${dir}/${path}`).catch(() => {});
    } else empty = false;
  }
  return empty;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Removes a pod's folder (volumes and all). */
export async function removePodDir(stateDir: string, uid: string): Promise<void> {
  await Deno.remove(podDir(stateDir, uid), { recursive: true }).catch(() => {});
}

/**
 * The host path of `subPath` inside the volume folder `base`, made (as a
 * folder with the volume's mode) when it does not exist, as the kubelet does
 * for subPath and subPathExpr mounts; dockerd refuses a bind mount whose
 * source is missing. Throws InvalidInputError when the path leaves the
 * volume, also through a symbolic link a container placed in it (a link to
 * "/" in an emptyDir must never become a mount of the device's root).
 */
export async function ensureSubPath(base: string, subPath: string): Promise<string> {
  if (subPath.startsWith("/") || subPath.split("/").includes("..")) {
    throw new InvalidInputError(`subPath "${subPath}" must be relative and stay inside its volume`);
  }
  const target = `${base}/${subPath}`;
  const root = await Deno.realPath(base);
  const inside = async () => {
    const real = await Deno.realPath(target);
    if (real !== root && !real.startsWith(`${root}/`)) {
      throw new InvalidInputError(
        `subPath "${subPath}" leaves its volume through a symbolic link (to "${real}")`,
      );
    }
  };
  try {
    await inside();
    return target;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  // Made one level at a time, each checked, so a link planted on the way is never followed.
  const mode = (await Deno.stat(base)).mode! & 0o7777;
  let at = base;
  for (const part of subPath.split("/").filter((p) => p && p !== ".")) {
    at = `${at}/${part}`;
    try {
      await Deno.mkdir(at, { mode });
      await Deno.chmod(at, mode);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    const real = await Deno.realPath(at);
    if (real !== root && !real.startsWith(`${root}/`)) {
      throw new InvalidInputError(
        `subPath "${subPath}" leaves its volume through a symbolic link (to "${real}")`,
      );
    }
  }
  return target;
}

/** The test(1) operator that checks each hostPath type (and what it says when it fails). */
const HOST_PATH_CHECKS: Record<string, [string, string]> = {
  Directory: ["-d", "a directory"],
  File: ["-f", "a file"],
  Socket: ["-S", "a socket"],
  CharDevice: ["-c", "a character device"],
  BlockDevice: ["-b", "a block device"],
};

/**
 * Checks (or makes) a hostPath volume's path as its Kubernetes type asks,
 * before any container mounts it: DirectoryOrCreate makes the folder (0755,
 * with its parents), FileOrCreate an empty file (0644) in an existing folder;
 * Directory, File, Socket, CharDevice and BlockDevice must exist as such; ""
 * checks nothing. Throws InvalidInputError naming the path and the type.
 *
 * Done with sh (arhat's one allowed program): the device's host paths are
 * outside arhat's own read and write permissions, as they should stay.
 */
export async function prepareHostPath(path: string, type: string): Promise<void> {
  if (!type) return;
  if (!path.startsWith("/")) {
    throw new InvalidInputError(`hostPath "${path}" must be an absolute path`);
  }
  let script: string;
  let want: string;
  if (type === "DirectoryOrCreate") {
    script = 'test -d "$1" || { mkdir -p "$1" && chmod 0755 "$1"; }';
    want = "a directory (made when missing)";
  } else if (type === "FileOrCreate") {
    script = 'test -f "$1" || { test ! -e "$1" && : > "$1" && chmod 0644 "$1"; }';
    want = "a file (made when missing, in an existing folder)";
  } else if (HOST_PATH_CHECKS[type]) {
    const [op, what] = HOST_PATH_CHECKS[type]!;
    script = `test ${op} "$1"`;
    want = what;
  } else {
    throw new InvalidInputError(`hostPath "${path}": type "${type}" is not a hostPath type`);
  }
  const out = await new Deno.Command("/bin/sh", {
    args: ["-c", script, "sh", path],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim();
    throw new InvalidInputError(
      `hostPath "${path}" of type "${type}" is not ${want}${why ? `: ${why}` : ""}`,
    );
  }
}
