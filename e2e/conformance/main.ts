/**
 * `deno task conformance`: the upstream Kubernetes conformance tests against
 * one edge device.
 *
 * 1. Builds e2e.test, agnhost and ginkgo from the pinned module unless they
 *    are current (build.ts; the control plane is built by `harness.ts setup`).
 * 2. Selects the specs (selection.ts): `[Conformance]` specs of the packages
 *    apps, auth, common, node, scheduling and storage without `[Serial]` or
 *    `[Disruptive]`, narrowed by `--focus`, minus skip_list.yaml.
 * 3. Starts a fresh control plane (.cache/cluster-conformance-main), the services
 *    (registry, engines, ...; the harness's when ARANYA_TEST_* name them, as
 *    under `deno task test`), builds and provides the suite's images
 *    (images.ts), then aranya and ONE device on Podman (`--runtime docker`
 *    for dockerd) whose virtual Node is the only node (edge_device.ts).
 * 4. Runs e2e.test (serially by default; `--parallel N` runs it on N ginkgo
 *    processes through the ginkgo CLI built beside it: most specs wait on
 *    pods, so 3-4 processes shorten a run even on 2 cores) with the JUnit
 *    report in .cache/conformance/run-main/report/, its output (a dot per passed
 *    spec, the details of each failure) on stderr and in e2e.log.
 * 5. Prints ginkgo's closing summary, every failure with a one-line cause,
 *    the passing specs that only pass because the API server reaches the
 *    device's pod IPs on this machine (reachable_only_here.yaml), and ONE
 *    closing JSON line `{"bench":"conformance","summary":{...}}`.
 *
 * Everything it starts is stopped afterwards, also on failure, interruption
 * or the overall `--timeout` (minutes, default 240). Exits 0 when it measured
 * (whatever the tests' outcome), 1 when it could not, 2 on bad flags.
 */
import { parseArgs } from "node:util";
import { binPath, ensureBuilt } from "../cluster/build.ts";
import { type ControlPlane, startControlPlane } from "../cluster/control_plane.ts";
import { clusterHandle } from "../fixtures.ts";
import { CACHE, ensureDir, removeAll, ROOT } from "../paths.ts";
import { run as runCommand } from "../process.ts";
import {
  endpointsFromEnv,
  type ServiceEndpoints,
  type Services,
  startServices,
  stopLeftoverServices,
} from "../services/mod.ts";
import { flatSummary } from "@aranya/bench/summary";
import { E2E_TEST, ensureSuiteBuilt, GINKGO } from "./build.ts";
import { BUSYBOX_BUILD_PACKAGES, ensureBusyboxBuilt } from "./busybox_build.ts";
import { ensureHostPackages } from "../host_setup.ts";
import { type EdgeDevice, startEdgeDevice } from "./edge_device.ts";
import { listImages, provideImages, writeRepoList } from "./images.ts";
import { figures, parseJunit, type RunFigures, summaryLines } from "./report.ts";
import { applicableLimits, machineFacts } from "./machine_limits.ts";
import {
  firstMatch,
  focusRegex,
  loadPatterns,
  overreach,
  parseSpecList,
  select,
  type Selection,
} from "./selection.ts";

const say = (line: string) => console.error(`[conformance] ${line}`);

/**
 * Where a run of `instance` keeps its files (recreated per run): its report, logs, the repo
 * list. Runs of different instances (the smoke test's "smoke", `deno task conformance`'s
 * "main") never share a folder, a control plane or a device.
 */
export function runDir(instance: string): string {
  return `${CACHE}/conformance/run-${instance}`;
}
const SKIP_LIST = `${ROOT}/e2e/conformance/skip_list.yaml`;
const MACHINE_LIMITS = `${ROOT}/e2e/conformance/machine_limits.yaml`;
const REACHABLE = `${ROOT}/e2e/conformance/reachable_only_here.yaml`;

/** Flags of `deno task conformance`. */
export interface ConformanceOptions {
  /** Narrows the selection to specs whose full name matches (JavaScript/RE2 regex). */
  focus?: string;
  runtime: "podman" | "docker";
  /** Overall limit in minutes (setup, run and teardown). */
  timeoutMin: number;
  /** Parallel ginkgo processes (default 1: e2e.test alone, serially). */
  parallel: number;
  /** Only print the selection (no cluster). */
  list: boolean;
  /** Names the run's folders, control plane and device (default "main"). */
  instance?: string;
}

/** Parses the command line; throws with a usage message on bad flags. */
export function parseFlags(args: string[]): ConformanceOptions {
  const { values } = parseArgs({
    args,
    options: {
      focus: { type: "string" },
      runtime: { type: "string", default: "podman" },
      timeout: { type: "string", default: "240" },
      parallel: { type: "string", default: "1" },
      list: { type: "boolean", default: false },
      instance: { type: "string", default: "main" },
    },
    strict: true,
  });
  const runtime = values.runtime;
  if (runtime !== "podman" && runtime !== "docker") {
    throw new Error(`--runtime must be podman or docker, got "${runtime}"`);
  }
  const timeoutMin = Number(values.timeout);
  if (!(timeoutMin > 0)) throw new Error(`--timeout must be minutes > 0, got "${values.timeout}"`);
  const parallel = Number(values.parallel);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 16) {
    throw new Error(`--parallel must be 1..16, got "${values.parallel}"`);
  }
  if (values.focus !== undefined) new RegExp(values.focus);
  const instance = values.instance ?? "main";
  if (!/^[a-z0-9][a-z0-9-]{0,30}$/.test(instance)) {
    throw new Error(`--instance must be a short lowercase name (a-z, 0-9, -), got "${instance}"`);
  }
  return {
    focus: values.focus,
    runtime,
    timeoutMin,
    parallel,
    list: values.list ?? false,
    instance,
  };
}

/** What {@link suiteCommand} needs. */
export interface SuiteRun {
  kubeconfig: string;
  repoList: string;
  reportDir: string;
  outputDir: string;
  focus: string;
  timeoutS: number;
  /** Parallel ginkgo processes (1: e2e.test alone). */
  parallel: number;
}

/**
 * The command of a run: e2e.test with its flags, or, for `parallel` > 1, the
 * ginkgo CLI running the compiled e2e.test on that many processes (ginkgo's
 * flags before the binary, the framework's after `--`).
 */
export function suiteCommand(
  o: SuiteRun,
): { cmd: string; args: string[]; env: Record<string, string> } {
  // The flag alone is not enough: packages read image names into variables when they load
  // (apps' WebserverImage), before flags are parsed; manifest.go reads this variable then.
  const env = { KUBE_TEST_REPO_LIST: o.repoList };
  const framework = [
    `--kubeconfig=${o.kubeconfig}`,
    "--provider=skeleton",
    `--kubectl-path=${binPath("kubectl")}`,
    `--kube-test-repo-list=${o.repoList}`,
    `--report-dir=${o.reportDir}`,
    `--e2e-output-dir=${o.outputDir}`,
    // The device's Node is the only node and must be Ready and schedulable; no master to dump.
    "--allowed-not-ready-nodes=0",
    "--non-blocking-taints=node-role.kubernetes.io/control-plane",
    "--node-schedulable-timeout=3m",
    "--system-pods-startup-timeout=1m",
    "--disable-log-dump=true",
  ];
  const ginkgo = [
    `focus=${o.focus}`,
    "skip=\\[Serial\\]|\\[Disruptive\\]",
    `timeout=${Math.max(60, Math.floor(o.timeoutS))}s`,
    "no-color",
    // 7000 filtered-out specs would print an "S" each.
    "silence-skips",
  ];
  if (o.parallel <= 1) {
    return { cmd: E2E_TEST, args: [...framework, ...ginkgo.map((g) => `--ginkgo.${g}`)], env };
  }
  return {
    cmd: GINKGO,
    args: [
      `--procs=${o.parallel}`,
      ...ginkgo.map((g) => `--${g}`),
      E2E_TEST,
      "--",
      ...framework,
    ],
    env,
  };
}

/** Lists every spec of the built suite. */
async function listSpecs(dir: string): Promise<ReturnType<typeof parseSpecList>> {
  await ensureDir(dir);
  const out = await runCommand(E2E_TEST, ["--list-tests"], { cwd: dir });
  const specs = parseSpecList(out);
  if (specs.length === 0) throw new Error(`"${E2E_TEST} --list-tests" listed no spec`);
  return specs;
}

/** Runs the suite; its output goes to stderr and `logFile`. Resolves with the exit code. */
async function runSuite(
  command: { cmd: string; args: string[]; env: Record<string, string> },
  dir: string,
  signal: AbortSignal,
): Promise<{ code: number; tail: string }> {
  const logFile = `${dir}/e2e.log`;
  const child = new Deno.Command(command.cmd, {
    args: command.args,
    env: command.env,
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const onAbort = () => {
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    // Ginkgo reports and cleans up on SIGTERM; SIGKILL if it does not end within 2 minutes.
    setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }, 120_000);
  };
  signal.addEventListener("abort", onAbort, { once: true });
  const file = await Deno.open(logFile, { write: true, create: true, truncate: true });
  let tail = "";
  const dec = new TextDecoder();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) {
      await file.write(chunk);
      await Deno.stderr.write(chunk);
      tail = (tail + dec.decode(chunk, { stream: true })).slice(-20_000);
    }
  };
  await Promise.all([pump(child.stdout), pump(child.stderr)]);
  const status = await child.status;
  signal.removeEventListener("abort", onAbort);
  file.close();
  return { code: status.code, tail };
}

/** Ginkgo's closing lines ("Ran N of M Specs ...", "FAIL! -- ..." / "SUCCESS! -- ..."). */
export function ginkgoSummary(output: string): string[] {
  return output.split("\n").filter((l) =>
    /^Ran \d+ of \d+ Specs/.test(l) || /^(SUCCESS|FAIL)! /.test(l) ||
    /^Ginkgo (ran|timed out)/.test(l)
  );
}

/** The closing JSON object. */
export function closingLine(o: {
  opts: ConformanceOptions;
  selection?: Selection;
  figures?: RunFigures;
  reachable: string[];
  wallS: number;
  tenancy?: string;
  junit?: string;
  error?: string;
}): Record<string, unknown> {
  const f = o.figures;
  const s = o.selection;
  const skipped = (s?.skipped.length ?? 0) + (s?.machineLimited?.length ?? 0) +
    (f?.skippedAtRuntime.length ?? 0);
  return {
    bench: "conformance",
    summary: {
      ...flatSummary({
        selected: s?.selected.length ?? 0,
        passed: f?.passed.length ?? 0,
        failed: f?.failed.length ?? 0,
        skipped,
        notRun: f?.notRun.length ?? 0,
        reachableOnlyHere: o.reachable.length,
        wall_s: Math.round(o.wallS),
        runtime: o.opts.runtime,
        parallel: o.opts.parallel,
        ...(o.tenancy ? { tenancy: o.tenancy } : {}),
      }),
      skip_list: s?.skipped.map((x) => x.name) ?? [],
      machine_limited: s?.machineLimited?.map((x) => x.name) ?? [],
    },
    focus: o.opts.focus ?? null,
    failed: f?.failed.map((x) => ({ name: x.name, cause: x.cause })) ?? [],
    skipped: [
      ...(s?.skipped.map((x) => ({ name: x.name, reason: `skip_list: ${x.reason}` })) ?? []),
      ...(s?.machineLimited ?? []),
      ...(f?.skippedAtRuntime.map((x) => ({ name: x.name, reason: x.cause })) ?? []),
    ],
    notRun: f?.notRun ?? [],
    suiteFailures: f?.suiteFailures ?? [],
    reachable_only_here: o.reachable,
    junit: o.junit ?? null,
    machine: { cores: navigator.hardwareConcurrency, os: `${Deno.build.os} ${Deno.osRelease()}` },
    ...(o.error ? { error: o.error } : {}),
  };
}

/** A run's outcome: the exit code and the closing JSON object (absent for `--list`). */
export interface ConformanceResult {
  code: number;
  closing?: Record<string, unknown>;
}

/** One conformance run; prints its report and closing JSON line and resolves with both. */
export async function conformance(opts: ConformanceOptions): Promise<ConformanceResult> {
  const t0 = performance.now();
  const instance = opts.instance ?? "main";
  const dir = runDir(instance);
  const deadline = Date.now() + opts.timeoutMin * 60_000;
  const abort = new AbortController();
  let cluster: ControlPlane | undefined;
  let services: Services | undefined;
  let device: EdgeDevice | undefined;
  const teardown = async () => {
    await device?.stop().catch((e) => say(`stopping the device: ${e}`));
    await services?.stop().catch((e) => say(`stopping services: ${e}`));
    await cluster?.stop().catch((e) => say(`stopping the control plane: ${e}`));
    device = undefined;
    services = undefined;
    cluster = undefined;
  };
  const onSignal = () => {
    say("interrupted; stopping everything");
    abort.abort();
    teardown().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const overall = setTimeout(() => {
    say(`overall timeout of ${opts.timeoutMin} min reached; stopping the suite`);
    abort.abort();
  }, opts.timeoutMin * 60_000);

  let selection: Selection | undefined;
  let runFigures: RunFigures | undefined;
  let reachable: string[] = [];
  let junit: string | undefined;
  let tenancy: string | undefined;
  let error: string | undefined;
  try {
    const cp = await ensureBuilt(say);
    const suite = await ensureSuiteBuilt(say);
    await ensureHostPackages(say, BUSYBOX_BUILD_PACKAGES);
    await ensureBusyboxBuilt(say);
    if (suite.built) say(`built e2e.test and agnhost in ${suite.seconds.toFixed(0)} s`);
    say(`Kubernetes ${cp.version}: listing the suite's specs`);
    const specs = await listSpecs(dir);
    const skipList = await loadPatterns(SKIP_LIST, "skip");
    selection = select(specs, { focus: opts.focus, skipList });
    const limits = applicableLimits(
      await Deno.readTextFile(MACHINE_LIMITS),
      opts.runtime,
      await machineFacts(),
    );
    const limited = selection.run.flatMap((name) => {
      const hit = firstMatch(name, limits);
      return hit ? [{ name, reason: hit.reason }] : [];
    });
    if (limited.length) {
      const out = new Set(limited.map((x) => x.name));
      selection = {
        ...selection,
        run: selection.run.filter((n) => !out.has(n)),
        machineLimited: limited,
      };
      for (const x of limited) say(`not run on this machine: ${x.name} (${x.reason})`);
    }
    say(
      `selected ${selection.selected.length} specs (${selection.skipped.length} in the skip list, ${selection.run.length} to run)`,
    );
    if (opts.list) {
      for (const n of selection.run) console.log(n);
      for (const s of selection.skipped) console.log(`SKIP ${s.name} (${s.reason})`);
      return { code: 0 };
    }
    if (selection.run.length === 0) throw new Error("No spec to run: the focus matches nothing");
    const extra = overreach(specs.map((s) => s.name), selection.run);
    if (extra.length) throw new Error(`The focus regex would also run: ${extra.join("; ")}`);

    await removeAll(dir);
    await ensureDir(dir);
    say("starting the control plane");
    cluster = await startControlPlane({
      dir: `${CACHE}/cluster-conformance-${instance}`,
      log: say,
    });
    const handle = clusterHandle(cluster.kubeconfig, () => Promise.resolve());
    // The harness's services when it runs us (ARANYA_TEST_*), else our own.
    let e: ServiceEndpoints | undefined = endpointsFromEnv();
    if (e) say(`using the services of ARANYA_TEST_* (registry ${e.registry})`);
    else {
      say("starting the services");
      await stopLeftoverServices();
      services = await startServices({ log: say });
      e = services.endpoints;
    }
    const deviceSocket = opts.runtime === "docker" ? e.dockerSocket : e.podmanSocket;
    const repoList = await writeRepoList(e.registry, dir);
    const images = await provideImages({
      images: await listImages(E2E_TEST, repoList),
      registry: e.registry,
      auth: { username: e.registryUser, password: e.registryPassword, serveraddress: e.registry },
      dockerSocket: e.dockerSocket,
      deviceSocket,
      log: say,
    });
    say(`${images.provided.length} images on the device; not built: ${images.missing.length}`);
    await Deno.writeTextFile(`${dir}/images.json`, JSON.stringify(images, null, 2) + "\n");
    device = await startEdgeDevice({
      cluster: handle,
      runtimeSocket: deviceSocket,
      infraImage: e.testImage,
      instance,
      log: say,
    });
    tenancy = device.tenancy;
    say(`Node "${device.node}" is Ready (tenancy: ${tenancy}); running e2e.test`);

    const reportDir = `${dir}/report`;
    const budgetS = (deadline - Date.now()) / 1000 - 180;
    const command = suiteCommand({
      kubeconfig: cluster.kubeconfig,
      repoList,
      reportDir,
      outputDir: dir,
      focus: focusRegex(selection.run),
      timeoutS: budgetS,
      parallel: opts.parallel,
    });
    const result = await runSuite(command, dir, abort.signal);
    say(`e2e.test exited with code ${result.code}`);
    junit = `${reportDir}/junit_01.xml`;
    const xml = await Deno.readTextFile(junit).catch(() => undefined);
    if (!xml) throw new Error(`e2e.test wrote no JUnit report (${junit}); see ${dir}/e2e.log`);
    runFigures = figures(parseJunit(xml), selection.run);
    const patterns = await loadPatterns(REACHABLE, "reachable_only_here");
    reachable = runFigures.passed.map((p) => p.name).filter((n) => firstMatch(n, patterns));
    console.log(ginkgoSummary(result.tail).join("\n"));
    for (const l of summaryLines(runFigures, junit)) console.log(l);
    for (const r of reachable) console.log(`  REACHABLE_ONLY_HERE ${r}`);
    for (const s of selection.skipped) console.log(`  SKIP_LIST ${s.name}: ${s.reason}`);
    if (runFigures.suiteFailures.length) {
      error = `suite setup failed: ${runFigures.suiteFailures[0]!.cause}`;
      console.error(await device.tails(40));
    }
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
    say(error);
  } finally {
    clearTimeout(overall);
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
  const wallS = (performance.now() - t0) / 1000;
  const closing = closingLine({
    opts,
    selection,
    figures: runFigures,
    reachable,
    wallS,
    tenancy,
    junit,
    error,
  });
  console.log(JSON.stringify(closing));
  return { code: error || !runFigures ? 1 : 0, closing };
}

if (import.meta.main) {
  let opts: ConformanceOptions;
  try {
    opts = parseFlags(Deno.args);
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    say(
      "usage: deno task conformance [--focus REGEX] [--runtime podman|docker] [--parallel N] [--timeout MIN] [--instance NAME] [--list]",
    );
    Deno.exit(2);
  }
  Deno.exit((await conformance(opts)).code);
}
