/**
 * arhat as shipped, for benches: the bundle that `deno task compile:arhat`
 * compiles and the launcher runs (ops/build/bundle.ts), run the way the
 * launcher script runs it (`deno run --no-lock --cached-only --config
 * deno.json -P=arhat arhat.js`), so its permission set is the shipped one.
 *
 * The permission set names `./.cache/arhat-e2e`, which Deno resolves beside
 * the bundle's deno.json: a device's files (config, token, CA, state) go
 * under {@link ShippedArhatBundle.deviceDir}.
 */
import { bundleProgram } from "../ops/build/bundle.ts";
import { ensureDir } from "../e2e/paths.ts";
import { type ServiceProcess, startService } from "../e2e/process.ts";

/** A built bundle. */
export interface ShippedArhatBundle {
  /** The bundle's folder (arhat.js, deno.json). */
  dir: string;
  /** A folder for one device's files that the shipped permission set lets arhat use. */
  deviceDir(name: string): Promise<string>;
  /** Starts arhat with `config` (a file under a {@link deviceDir}); it dies with this process. */
  spawn(name: string, config: string): Promise<ServiceProcess>;
}

/** Bundles arhat into `dir` (created) and returns how to run it. */
export async function buildShippedArhat(dir: string): Promise<ShippedArhatBundle> {
  const { script, config } = await bundleProgram({ program: "arhat", outDir: dir });
  const devices = `${dir}/.cache/arhat-e2e`;
  return {
    dir,
    deviceDir: (name) => ensureDir(`${devices}/${name}`),
    spawn: (name, arhatConfig) =>
      startService({
        name: `arhat ${name}`,
        cmd: "deno",
        args: [
          "run",
          "--quiet",
          "--no-prompt",
          "--no-lock",
          "--cached-only",
          "--config",
          config,
          "-P=arhat",
          script,
          "-c",
          arhatConfig,
        ],
        env: { DENO_DIR: `${dir}/deno-dir`, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
        logFile: `${devices}/${name}/arhat.log`,
        pidFile: `${devices}/${name}/arhat.pid`,
      }),
  };
}
