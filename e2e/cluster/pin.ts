/**
 * `deno task cluster:pin vX.Y.Z`: pins the local control plane to another
 * Kubernetes release.
 *
 * k8s.io/kubernetes cannot be `go install`ed: its go.mod requires every
 * k8s.io staging module at v0.0.0 and replaces them with local paths that the
 * published module does not contain. So our go.mod requires k8s.io/kubernetes
 * and replaces each staging module that upstream's go.mod lists with its
 * published version (v0.Y.Z for Kubernetes v1.Y.Z); `go mod tidy` then
 * resolves the rest. The next build notices the new pin and rebuilds.
 */
import { run } from "../process.ts";
import { MODULE_DIR } from "./build.ts";

async function main(version: string | undefined): Promise<void> {
  if (!version || !/^v1\.\d+\.\d+$/.test(version)) {
    throw new Error(`Expected a Kubernetes release such as "v1.34.4", got "${version ?? ""}"`);
  }
  const info = JSON.parse(
    await run("go", ["mod", "download", "-json", `k8s.io/kubernetes@${version}`], {
      cwd: MODULE_DIR,
    }),
  ) as { GoMod: string };
  const upstream = await Deno.readTextFile(info.GoMod);
  const staging = [...upstream.matchAll(/^\s+(k8s\.io\/[a-z0-9-]+) => \.\/staging\//gm)]
    .map((m) => m[1]!);
  if (staging.length === 0) {
    throw new Error(`No staging replacements found in "${info.GoMod}"`);
  }
  const published = `v0.${version.slice(3)}`;
  const goVersion = upstream.match(/^go (\S+)/m)?.[1] ?? "1.24.0";
  // Upstream's GODEBUG defaults apply to binaries only through the main module: keep them.
  const godebug = upstream.match(/^godebug .*$/m)?.[0];
  const text = [
    "// Builds a real Kubernetes control plane (pinned release) for aranya's tests and demo.",
    "// Regenerate with `deno task cluster:pin <version>`; do not edit the require/replace blocks by hand.",
    "module arhat.dev/aranya/e2e/cluster",
    "",
    `go ${goVersion}`,
    "",
    ...(godebug ? [godebug, ""] : []),
    `require k8s.io/kubernetes ${version}`,
    "",
    "replace (",
    ...staging.map((m) => `\t${m} => ${m} ${published}`),
    ")",
    "",
  ].join("\n");
  await Deno.writeTextFile(`${MODULE_DIR}/go.mod`, text);
  await run("go", ["mod", "tidy"], { cwd: MODULE_DIR });
  console.error(
    `[cluster] pinned Kubernetes ${version} (${staging.length} staging modules at ${published})`,
  );
}

if (import.meta.main) {
  try {
    await main(Deno.args[0]);
  } catch (err) {
    console.error(`[cluster] ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(1);
  }
}
