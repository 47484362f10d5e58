/**
 * Builds the pinned Kubernetes control plane (and the kubelet and kube-proxy of
 * the worker node) from upstream Go modules.
 *
 * The Go module in this folder requires k8s.io/kubernetes at the pinned release
 * and replaces every k8s.io staging module with its published version (what
 * upstream's own go.mod does with local paths). `go build` then compiles
 * kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, the
 * kubelet (for e2e/cluster/worker_node.ts) and kube-proxy (e2e/cluster/kube_proxy.ts)
 * from the module cache, plus two commands of ours: the embedded etcd and the
 * entrypoint of aranya's stand-in image (e2e/in_cluster/standin_image.ts). Binaries land in `.cache/cluster/bin/` and are rebuilt
 * only when the pin (go.mod, go.sum, our sources, the version flags) changes.
 */
import { CACHE, ensureDir, exists, ROOT } from "../paths.ts";
import { sha256Hex } from "@aranya/common/digest";

/** Folder of this Go module. */
export const MODULE_DIR = `${ROOT}/e2e/cluster`;
/** Where the binaries go. */
export const BIN_DIR = `${CACHE}/cluster/bin`;
/** The binaries this build produces. */
export const BINARIES = [
  "etcd",
  "kube-apiserver",
  "kube-controller-manager",
  "kube-scheduler",
  "kubectl",
  "kubelet",
  "kube-proxy",
  "aranya-standin",
] as const;
export type Binary = typeof BINARIES[number];

/** Absolute path of one built binary. */
export function binPath(name: Binary): string {
  return `${BIN_DIR}/${name}`;
}

/** The pinned Kubernetes version, read from go.mod (e.g. "v1.34.4"). */
export async function pinnedVersion(): Promise<string> {
  const gomod = await Deno.readTextFile(`${MODULE_DIR}/go.mod`);
  const m = gomod.match(/^\s*require\s+k8s\.io\/kubernetes\s+(v\d+\.\d+\.\d+)/m) ??
    gomod.match(/^\s*k8s\.io\/kubernetes\s+(v\d+\.\d+\.\d+)/m);
  if (!m?.[1]) throw new Error(`Cannot find the k8s.io/kubernetes pin in "${MODULE_DIR}/go.mod"`);
  return m[1];
}

/** The -ldflags that stamp `version` into the Kubernetes binaries (also e2e/conformance's). */
export function ldflags(version: string): string {
  const [major, minor] = version.slice(1).split(".");
  const x = (pkg: string, key: string, value: string) => `-X ${pkg}.${key}=${value}`;
  const base = "k8s.io/component-base/version";
  const client = "k8s.io/client-go/pkg/version";
  return [
    "-s",
    "-w",
    x(base, "gitVersion", version),
    x(base, "gitMajor", major!),
    x(base, "gitMinor", minor!),
    x(base, "gitTreeState", "clean"),
    x(client, "gitVersion", version),
    x(client, "gitMajor", major!),
    x(client, "gitMinor", minor!),
  ].join(" ");
}

async function stamp(version: string): Promise<string> {
  const parts = [version, ldflags(version)];
  for (const f of ["go.mod", "go.sum", "cmd/etcd/main.go", "cmd/aranya-standin/main.go"]) {
    parts.push(await Deno.readTextFile(`${MODULE_DIR}/${f}`));
  }
  return sha256Hex(parts.join("\0"));
}

/** Result of {@link ensureBuilt}. */
export interface BuildResult {
  version: string;
  /** False when the cached binaries were current. */
  built: boolean;
  seconds: number;
}

/**
 * Builds the binaries unless the cached ones match the pin. Idempotent.
 * Throws a clear error when Go is missing or the build fails.
 */
export async function ensureBuilt(log: (line: string) => void = () => {}): Promise<BuildResult> {
  const version = await pinnedVersion();
  const want = await stamp(version);
  const stampFile = `${BIN_DIR}/.stamp`;
  const have = await Deno.readTextFile(stampFile).catch(() => "");
  let complete = have.trim() === want;
  for (const b of BINARIES) complete &&= await exists(binPath(b));
  if (complete) return { version, built: false, seconds: 0 };

  await ensureDir(BIN_DIR);
  const started = performance.now();
  log(`building Kubernetes ${version} control plane into ${BIN_DIR} (cold builds take a while)`);
  const pkgs = [
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kube-scheduler",
    "k8s.io/kubernetes/cmd/kubectl",
    "k8s.io/kubernetes/cmd/kubelet",
    "k8s.io/kubernetes/cmd/kube-proxy",
    "./cmd/etcd",
    "./cmd/aranya-standin",
  ];
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("go", {
      args: [
        "build",
        "-buildvcs=false",
        "-trimpath",
        "-ldflags",
        ldflags(version),
        "-o",
        `${BIN_DIR}/`,
        ...pkgs,
      ],
      cwd: MODULE_DIR,
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        'Go is required to build the local control plane, but "go" is not on PATH; install Go 1.24 or newer',
      );
    }
    throw err;
  }
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr);
    throw new Error(`Building the Kubernetes ${version} control plane failed:\n${stderr}`);
  }
  await Deno.writeTextFile(stampFile, want + "\n");
  return { version, built: true, seconds: (performance.now() - started) / 1000 };
}
