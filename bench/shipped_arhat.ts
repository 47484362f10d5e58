/**
 * arhat as shipped, for benches: the bundle that `deno task compile:arhat`
 * compiles and the launcher runs (ops/build/bundle.ts), run the way the
 * launcher script runs it (`deno run --no-lock --cached-only --config
 * deno.json -P=arhat <V8 flags> arhat.js`), so its permission set and V8 flags
 * are the shipped ones.
 *
 * The permission set names `./.cache/arhat-e2e`, which Deno resolves beside
 * the bundle's deno.json: a device's files (config, token, CA, state) go
 * under {@link ShippedArhatBundle.deviceDir}.
 */
import { bundleProgram, V8_FLAGS } from "@aranya/ops/build/bundle";
import { ensureDir } from "@aranya/e2e/paths";
import { type ServiceProcess, startService } from "@aranya/e2e/process";

/** A built bundle. */
export interface ShippedArhatBundle {
  /** The bundle's folder (arhat.js, deno.json). */
  dir: string;
  /** A folder for one device's files that the shipped permission set lets arhat use. */
  deviceDir(name: string): Promise<string>;
  /** Starts arhat with `config` (a file under a {@link deviceDir}); it dies with this process. */
  spawn(name: string, config: string): Promise<ServiceProcess>;
  /** The command line and environment that run arhat with `config`, for callers that spawn it. */
  command(config: string): { cmd: string; args: string[]; env: Record<string, string> };
  /**
   * Loads the bundle once (arhat exits at once on a missing config), so its DENO_DIR holds the
   * dependency analysis a device's launcher keeps after its first start: without it, the first
   * process parses the 2.5 MB bundle and keeps about 45 MB of that for its life.
   */
  warm(): Promise<void>;
  /** The V8 flags the bundle runs with (ops/build/bundle.ts). */
  v8Flags: readonly string[];
}

/** Options of {@link buildShippedArhat}. */
export interface ShippedArhatOptions {
  /** V8 flags instead of the shipped ones (to measure them). */
  v8Flags?: readonly string[];
  /**
   * The command that is `deno`, program first (default `["deno"]`, this machine's): e.g.
   * `["/usr/bin/qemu-aarch64-static", "<arm64 deno>"]` runs the bundle as an arm64 device
   * (e2e/arm64_e2e_test.ts). The arguments after it are the same.
   */
  deno?: readonly string[];
}

/** Bundles arhat into `dir` (created) and returns how to run it. */
export async function buildShippedArhat(
  dir: string,
  opts: ShippedArhatOptions = {},
): Promise<ShippedArhatBundle> {
  const bundle = await bundleProgram({ program: "arhat", outDir: dir });
  const { script, config } = bundle;
  const v8Flags = opts.v8Flags ?? V8_FLAGS.arhat;
  const runFlags = opts.v8Flags === undefined
    ? bundle.runFlags
    : v8Flags.length
    ? [`--v8-flags=${v8Flags.join(",")}`]
    : [];
  const [cmd = "deno", ...lead] = opts.deno ?? ["deno"];
  const devices = `${dir}/.cache/arhat-e2e`;
  const env = { DENO_DIR: `${dir}/deno-dir`, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
  const args = (arhatConfig: string) => [
    ...lead,
    "run",
    "--quiet",
    "--no-prompt",
    "--no-lock",
    "--cached-only",
    "--config",
    config,
    "-P=arhat",
    ...runFlags,
    script,
    "-c",
    arhatConfig,
  ];
  return {
    dir,
    v8Flags,
    warm: async () => {
      await new Deno.Command(cmd, {
        args: args(`${devices}/no-such-config.yaml`),
        env,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
    },
    deviceDir: (name) => ensureDir(`${devices}/${name}`),
    command: (arhatConfig) => ({ cmd, args: args(arhatConfig), env }),
    spawn: (name, arhatConfig) =>
      startService({
        name: `arhat ${name}`,
        cmd,
        args: args(arhatConfig),
        env,
        logFile: `${devices}/${name}/arhat.log`,
        pidFile: `${devices}/${name}/arhat.pid`,
      }),
  };
}
