/**
 * Builds the upstream conformance suite (`e2e.test`) and `agnhost` from the
 * Kubernetes release that e2e/cluster pins, into `.cache/conformance/bin/`.
 *
 * This folder is a Go module of its own (go.mod, go.sum, tools.go) beside
 * e2e/cluster's: it requires the same k8s.io/kubernetes and replaces the same
 * staging modules with their published versions, and its tools.go imports what
 * the suite's test main imports, so `go mod tidy` keeps their dependencies (the
 * suite needs onsi/ginkgo and gomega and a few more that the control plane does
 * not). A separate module keeps the control plane's go.sum, and so its build
 * stamp, untouched. `go test -c k8s.io/kubernetes/test/e2e` compiles the suite
 * from the module cache; agnhost and nonewprivs' nnp (test images) are built
 * with CGO off, so they are static; the
 * ginkgo CLI (same ginkgo as the suite's) runs it on parallel processes.
 * Rebuilt only when the pin (go.mod, go.sum, tools.go, the version flags)
 * changes; Go's build cache makes a rebuild incremental.
 *
 * `deno run -P=e2e e2e/conformance/build.ts pin` rewrites go.mod from
 * e2e/cluster/go.mod (after `deno task cluster:pin`) and runs `go mod tidy`;
 * `... build.ts` alone builds.
 */
import { ldflags, MODULE_DIR as CLUSTER_MODULE_DIR, pinnedVersion } from "../cluster/build.ts";
import { sha256Hex } from "@aranya/common/digest";
import { CACHE, ensureDir, exists, ROOT } from "../paths.ts";

/** Folder of this Go module. */
export const MODULE_DIR = `${ROOT}/e2e/conformance`;
/** Where the binaries go. */
export const BIN_DIR = `${CACHE}/conformance/bin`;
/** The upstream e2e suite, compiled. */
export const E2E_TEST = `${BIN_DIR}/e2e.test`;
/** agnhost, static. */
export const AGNHOST = `${BIN_DIR}/agnhost`;
/** nonewprivs' `nnp` (prints its effective uid), static. */
export const NNP = `${BIN_DIR}/nnp`;
/** The ginkgo CLI of the suite's ginkgo version (runs e2e.test on parallel processes). */
export const GINKGO = `${BIN_DIR}/ginkgo`;

const HEADER = [
  "// Builds the upstream conformance suite (e2e.test) and agnhost from the Kubernetes release that",
  "// e2e/cluster pins. Regenerate with `deno run -P=e2e e2e/conformance/build.ts pin`; do not edit the",
  "// require/replace blocks by hand.",
  "module arhat.dev/aranya/e2e/conformance",
];

/** The pin-relevant lines of a go.mod: the go directive, godebug, the k8s.io/kubernetes require, replaces. */
function pinLines(gomod: string): string[] {
  const out: string[] = [];
  const go = gomod.match(/^go \S+$/m)?.[0];
  if (go) out.push(go);
  const godebug = gomod.match(/^godebug .*$/m)?.[0];
  if (godebug) out.push(godebug);
  const k8s = gomod.match(/^\s*(?:require\s+)?k8s\.io\/kubernetes\s+(v\S+)/m)?.[1];
  if (k8s) out.push(`require k8s.io/kubernetes ${k8s}`);
  const replace = gomod.match(/^replace \(\n([\s\S]*?)^\)/m)?.[1] ?? "";
  out.push(
    ...replace.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("//")).sort(),
  );
  return out;
}

/**
 * Throws unless this module pins the same Kubernetes (version and staging
 * replacements) as e2e/cluster, so the suite tests the control plane it came with.
 */
export async function checkPin(): Promise<string> {
  const cluster = pinLines(await Deno.readTextFile(`${CLUSTER_MODULE_DIR}/go.mod`));
  const ours = pinLines(await Deno.readTextFile(`${MODULE_DIR}/go.mod`));
  if (JSON.stringify(cluster) !== JSON.stringify(ours)) {
    throw new Error(
      `e2e/conformance/go.mod does not pin what e2e/cluster/go.mod pins; run "deno run -P=e2e e2e/conformance/build.ts pin"`,
    );
  }
  return await pinnedVersion();
}

/** Rewrites go.mod from e2e/cluster/go.mod's pin and runs `go mod tidy`. */
export async function pin(log: (line: string) => void = () => {}): Promise<void> {
  const gomod = await Deno.readTextFile(`${CLUSTER_MODULE_DIR}/go.mod`);
  const lines = pinLines(gomod);
  const replaces = lines.filter((l) => l.includes("=>"));
  const text = [
    ...HEADER,
    "",
    ...lines.filter((l) => !l.includes("=>")).flatMap((l) => [l, ""]),
    "replace (",
    ...replaces.map((r) => `\t${r}`),
    ")",
    "",
  ].join("\n");
  await Deno.writeTextFile(`${MODULE_DIR}/go.mod`, text);
  await go(["mod", "tidy"], {}, `${CACHE}/conformance/pin.log`);
  log(`e2e/conformance pinned to what e2e/cluster pins (${await pinnedVersion()})`);
}

async function stamp(version: string): Promise<string> {
  const parts = [version, ldflags(version)];
  for (const f of ["go.mod", "go.sum", "tools.go"]) {
    parts.push(await Deno.readTextFile(`${MODULE_DIR}/${f}`));
  }
  return sha256Hex(parts.join("\0"));
}

/** Runs go in this module; its output goes to `logFile` (appended); throws with the log's end. */
async function go(args: string[], env: Record<string, string>, logFile: string): Promise<void> {
  await ensureDir(logFile.replace(/\/[^/]*$/, ""));
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("go", {
      args,
      cwd: MODULE_DIR,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error('Go is required to build the conformance suite, but "go" is not on PATH');
    }
    throw err;
  }
  const dec = new TextDecoder();
  const text = `$ go ${args.join(" ")}\n${dec.decode(out.stdout)}${dec.decode(out.stderr)}`;
  await Deno.writeTextFile(logFile, text, { append: true });
  if (!out.success) {
    throw new Error(`"go ${args.slice(0, 2).join(" ")}" failed:\n${text.slice(-4000)}`);
  }
}

/** Result of {@link ensureSuiteBuilt}. */
export interface SuiteBuild {
  version: string;
  /** False when the cached binaries were current. */
  built: boolean;
  seconds: number;
}

/**
 * Builds e2e.test and agnhost unless the cached ones match the pin. Idempotent.
 * A cold build takes 10-20 minutes on 2 cores (much of the control plane's
 * compiled packages are reused from Go's build cache).
 */
export async function ensureSuiteBuilt(
  log: (line: string) => void = () => {},
): Promise<SuiteBuild> {
  const version = await checkPin();
  const want = await stamp(version);
  const stampFile = `${BIN_DIR}/.stamp`;
  const have = await Deno.readTextFile(stampFile).catch(() => "");
  if (
    have.trim() === want && await exists(E2E_TEST) && await exists(AGNHOST) &&
    await exists(NNP) && await exists(GINKGO)
  ) {
    return { version, built: false, seconds: 0 };
  }
  await ensureDir(BIN_DIR);
  const logFile = `${CACHE}/conformance/build.log`;
  await Deno.writeTextFile(logFile, "");
  const t0 = performance.now();
  const flags = ["-trimpath", "-ldflags", ldflags(version)];
  log(`building e2e.test (Kubernetes ${version}) into ${BIN_DIR}; cold builds take 10-20 min`);
  await go(["test", "-c", ...flags, "-o", E2E_TEST, "k8s.io/kubernetes/test/e2e"], {}, logFile);
  log(`building agnhost and nnp (static) into ${BIN_DIR}`);
  await go(
    ["build", ...flags, "-o", AGNHOST, "k8s.io/kubernetes/test/images/agnhost"],
    { CGO_ENABLED: "0" },
    logFile,
  );
  await go(
    ["build", ...flags, "-o", NNP, "k8s.io/kubernetes/test/images/nonewprivs"],
    { CGO_ENABLED: "0" },
    logFile,
  );
  log(`building the ginkgo CLI into ${BIN_DIR}`);
  await go(["build", "-trimpath", "-o", GINKGO, "github.com/onsi/ginkgo/v2/ginkgo"], {}, logFile);
  await Deno.writeTextFile(stampFile, want + "\n");
  return { version, built: true, seconds: (performance.now() - t0) / 1000 };
}

if (import.meta.main) {
  const say = (line: string) => console.error(`[conformance] ${line}`);
  try {
    if (Deno.args[0] === "pin") await pin(say);
    else {
      const b = await ensureSuiteBuilt(say);
      say(
        b.built
          ? `built e2e.test, agnhost, nnp and ginkgo (${b.version}) in ${b.seconds.toFixed(0)} s`
          : `e2e.test, agnhost, nnp and ginkgo (${b.version}) are up to date`,
      );
    }
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
}
