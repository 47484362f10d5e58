/**
 * Which arhat program goes to a device of a given architecture: the compiled binary
 * `<dir>/arhat-<target>` (from `deno task compile:arhat`) when it exists, else, when the inventory
 * allows it, the launcher (ops/build/launcher.ts) with a `deno` for the device's architecture: this
 * machine's own for its architecture, else Deno's npm build of the same version
 * (ops/build/deno_for_arch.ts, fetched once). Found (or built) and hashed once per architecture
 * and run, and shared by every device.
 *
 * @module
 */
import { fileSha256Hex } from "@aranya/common/digest";
import { NotFoundError } from "@aranya/common/errors";
import { PROJECT_ROOT } from "../build/bundle.ts";
import { type ArtifactFile, buildLauncher } from "../build/launcher.ts";
import { DEVICE_PATHS } from "./arhat_config.ts";
import { type Arch, targetOf } from "./inventory.ts";

/** One file of an artifact with its SHA-256 (hex). */
export interface HashedFile extends ArtifactFile {
  sha256: string;
}

/** The program for one architecture. */
export interface Artifact {
  kind: "binary" | "launcher";
  /** Files to install, the program itself last. */
  files: HashedFile[];
}

/** Options of {@link ArtifactStore}. */
export interface ArtifactStoreOptions {
  /** Folder with `arhat-<target>` binaries. */
  dir: string;
  /** Allow the launcher when no binary exists. */
  launcher: boolean;
  /**
   * Where the launcher for this machine's architecture is built (default: the project's
   * dist/arhat-launcher); the one for another architecture goes to `<launcherDir>-<arch>`.
   */
  launcherDir?: string;
}

/** Finds (and builds, once) the arhat artifact per architecture. */
export class ArtifactStore {
  readonly #o: ArtifactStoreOptions;
  readonly #byArch = new Map<Arch, Promise<Artifact>>();

  constructor(o: ArtifactStoreOptions) {
    this.#o = o;
  }

  /**
   * The artifact for `arch`, the same one for every device of a run.
   * @throws NotFoundError naming the missing binary and what to do.
   * @throws InternalError when the launcher cannot be built (bundle, or the `deno` for `arch`).
   */
  forArch(arch: Arch): Promise<Artifact> {
    let a = this.#byArch.get(arch);
    if (!a) {
      a = this.#find(arch);
      this.#byArch.set(arch, a);
    }
    return a;
  }

  async #find(arch: Arch): Promise<Artifact> {
    const target = targetOf(arch);
    const binary = `${this.#o.dir}/arhat-${target}`;
    if (await isFile(binary)) {
      return {
        kind: "binary",
        files: await hashed([{ local: binary, remote: DEVICE_PATHS.bin, mode: 0o755 }]),
      };
    }
    if (this.#o.launcher) {
      const base = this.#o.launcherDir ?? `${PROJECT_ROOT}/dist/arhat-launcher`;
      const outDir = arch === Deno.build.arch ? base : `${base}-${arch}`;
      const files = await buildLauncher({ outDir, arch });
      return { kind: "launcher", files: await hashed(files) };
    }
    throw new NotFoundError(
      `No arhat program for "${arch}": "${binary}" does not exist; build it with ` +
        `"deno task compile:arhat --target ${target}", or set "artifacts.launcher: true" in ` +
        "the inventory",
    );
  }
}

function hashed(files: ArtifactFile[]): Promise<HashedFile[]> {
  return Promise.all(files.map(async (f) => ({ ...f, sha256: await fileSha256Hex(f.local) })));
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
