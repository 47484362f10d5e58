/**
 * The test harness behind `deno task test`, `deno task setup` and
 * `deno task services:up|down`.
 *
 * `setup` installs the host's Debian packages, fetches Deno's arm64 build for
 * the arm64 device test (e2e/arm64_setup.ts) and builds the control plane
 * (idempotent). It runs as its own process before `test`, because Deno
 * resolves the `--allow-run` names of deno.json when a process starts, and a
 * freshly installed program would not be allowed in the same process.
 *
 * `test` starts the control plane and the services once, runs `deno test` over
 * the whole workspace with the same permission set, and stops everything
 * afterwards, also when tests fail or the run is interrupted. Every service is
 * started with PDEATHSIG, so even a killed harness leaves no process behind.
 *
 * `unit` runs only the tests that need no service (e2e/unit_run.ts selects
 * them) and starts nothing: `deno task test:unit`.
 */
import { ensureBuilt } from "./cluster/build.ts";
import { type ControlPlane, startControlPlane } from "./cluster/control_plane.ts";
import { stopDeadWorkers } from "./cluster/worker_node.ts";
import { ensureArm64Deno } from "./arm64_setup.ts";
import { ensureHostPackages } from "./host_setup.ts";
import { ensureNodeHelpers } from "./node_setup.ts";
import { CACHE, ROOT } from "./paths.ts";
import { UNIT_RUN_ENV, unitTestFiles } from "./unit_run.ts";
import {
  endpointsToEnv,
  type Services,
  startServices,
  stopLeftoverServices,
} from "./services/mod.ts";

const say = (line: string) => console.error(`[harness] ${line}`);

async function setup(): Promise<void> {
  const t0 = performance.now();
  await ensureHostPackages(say);
  await ensureArm64Deno(say);
  await ensureNodeHelpers(say);
  const b = await ensureBuilt(say);
  say(
    b.built
      ? `built Kubernetes ${b.version} control plane in ${b.seconds.toFixed(0)} s`
      : `Kubernetes ${b.version} control plane binaries are up to date`,
  );
  say(`setup done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** Parses deno test's summary ("ok | 3 passed | 0 failed | 1 ignored (5s)"). */
export function parseSummary(
  output: string,
): { passed: number; failed: number; ignored: number } | undefined {
  const m = [
    ...output.matchAll(
      /(\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?(?: \| (\d+) ignored)?/g,
    ),
  ]
    .at(-1);
  if (!m) return undefined;
  return { passed: Number(m[1]), failed: Number(m[3]), ignored: Number(m[5] ?? 0) };
}

async function test(extra: string[]): Promise<number> {
  const t0 = performance.now();
  let cluster: ControlPlane | undefined;
  let services: Services | undefined;
  const teardown = async () => {
    await services?.stop().catch((e) => say(`stopping services: ${e}`));
    await cluster?.stop().catch((e) => say(`stopping control plane: ${e}`));
    services = undefined;
    cluster = undefined;
  };
  const onSignal = () => {
    say("interrupted; stopping everything");
    teardown().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    await stopLeftoverServices();
    await stopDeadWorkers();
    const external = Deno.env.get("ARANYA_TEST_KUBECONFIG");
    const env: Record<string, string> = {};
    if (external) {
      say(`using the existing cluster of ARANYA_TEST_KUBECONFIG="${external}"`);
      env.ARANYA_TEST_KUBECONFIG = external;
    } else {
      say("starting the local control plane");
      cluster = await startControlPlane({ dir: `${CACHE}/cluster-test`, log: say });
      env.ARANYA_TEST_KUBECONFIG = cluster.kubeconfig;
      say(`control plane ${cluster.version} ready at ${cluster.server}`);
    }
    say("starting services");
    services = await startServices({ log: say });
    Object.assign(env, endpointsToEnv(services.endpoints));
    say(`environment ready in ${((performance.now() - t0) / 1000).toFixed(1)} s; running tests`);

    const child = new Deno.Command("deno", {
      args: ["test", "-P=e2e", "--no-prompt", ...extra],
      cwd: ROOT,
      env: Deno.stdout.isTerminal() ? env : { ...env, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    let captured = "";
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      await Deno.stdout.write(chunk);
      captured += dec.decode(chunk, { stream: true });
      if (captured.length > 200_000) captured = captured.slice(-100_000);
    }
    const status = await child.status;
    // deno-lint-ignore no-control-regex -- strips ANSI colour codes
    const summary = parseSummary(captured.replace(/\x1b\[[0-9;]*m/g, ""));
    const secs = ((performance.now() - t0) / 1000).toFixed(0);
    if (summary) {
      const skipped = summary.ignored ? `, ${summary.ignored} skipped` : "";
      console.log(`\nsuite: ${summary.passed} passed, ${summary.failed} failed${skipped}`);
    }
    say(`tests finished with code ${status.code} in ${secs} s (environment included)`);
    if (!summary || summary.passed === 0) {
      say("no test ran; treating the run as failed");
      return status.code || 1;
    }
    return status.code;
  } finally {
    await teardown();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

/** Runs the tests that need no service (see e2e/unit_run.ts); starts nothing. */
async function unit(extra: string[]): Promise<number> {
  const files = await unitTestFiles();
  say(`running ${files.length} test files that need no service`);
  const status = await new Deno.Command("deno", {
    args: ["test", "-P=e2e", "--no-prompt", ...extra, ...files],
    cwd: ROOT,
    env: { [UNIT_RUN_ENV]: "1" },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  return status.code;
}

async function servicesUp(): Promise<void> {
  const s = await startServices({ detached: true, log: say });
  for (const [k, v] of Object.entries(endpointsToEnv(s.endpoints))) console.log(`export ${k}=${v}`);
  say("stop them with: deno task services:down");
}

async function main(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  switch (verb) {
    case "setup":
      await setup();
      return 0;
    case "test":
      return await test(rest);
    case "unit":
      return await unit(rest);
    case "services-up":
      await servicesUp();
      return 0;
    case "services-down":
      await stopLeftoverServices();
      say("services stopped");
      return 0;
    default:
      console.error(
        `Usage: harness.ts setup|test|unit|services-up|services-down (got "${verb ?? ""}")`,
      );
      return 2;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    Deno.exit(1);
  }
}
