/**
 * Starting and stopping the long-running test services (etcd, kube-apiserver,
 * dockerd, mosquitto, ...) as child processes with a pidfile and a log file.
 *
 * Two modes:
 * - attached (tests): the child gets `PR_SET_PDEATHSIG=SIGKILL` through
 *   util-linux `setpriv`, so it dies with the harness even when the harness is
 *   killed and no `finally` runs;
 * - detached (`cluster:up`, the demo): the child runs in its own session and
 *   outlives the command; `cluster:down` stops it through its pidfile.
 *
 * Output goes to a log file through `sh -c 'exec ... >>log'`: Deno's Command
 * cannot redirect to a file, and a pipe would die with a detached parent.
 */
import { ensureDir } from "./paths.ts";
import { sleep } from "@aranya/common/backoff";

/** What to start. */
export interface ServiceSpec {
  /** Short name, used in messages. */
  name: string;
  /** Program (a name on PATH or a path). */
  cmd: string;
  args: string[];
  /** Extra environment for the child (added to the inherited one). */
  env?: Record<string, string>;
  /** File that receives stdout and stderr (appended). */
  logFile: string;
  /** File that receives the child's pid. */
  pidFile: string;
  /** Survive the starting process (true) or die with it (false, the default). */
  detached?: boolean;
}

/** A started service. */
export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  readonly pidFile: string;
  /** Resolves with the exit code when the process ends (while the starting process lives). */
  readonly exited: Promise<number>;
  /** Stops the process: SIGTERM, then SIGKILL after `graceMs`. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

const SH_EXEC = 'exec "$0" "$@" >>"$ARANYA_SERVICE_LOG" 2>&1';

/** Starts a service. Fails when the program cannot be spawned. */
export async function startService(spec: ServiceSpec): Promise<ServiceProcess> {
  await ensureDir(spec.logFile.replace(/\/[^/]*$/, ""));
  await ensureDir(spec.pidFile.replace(/\/[^/]*$/, ""));
  const env = { ...spec.env, ARANYA_SERVICE_LOG: spec.logFile };
  const shArgs = ["-c", SH_EXEC, spec.cmd, ...spec.args];
  const command = spec.detached
    ? new Deno.Command("sh", {
      args: shArgs,
      env,
      detached: true,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    })
    : new Deno.Command("setpriv", {
      args: ["--pdeathsig", "KILL", "--", "sh", ...shArgs],
      env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    });
  const child = command.spawn();
  await Deno.writeTextFile(spec.pidFile, `${child.pid}\n`);
  // Detached children are unref'd so this process can exit, but while it
  // lives their exit is still observed (and reaped).
  if (spec.detached) child.unref();
  const exited = child.status.then((s) => s.code);
  const pid = child.pid;
  return {
    name: spec.name,
    pid,
    logFile: spec.logFile,
    pidFile: spec.pidFile,
    exited,
    stop: async (graceMs = 10_000) => {
      await stopPid(pid, graceMs);
      await Deno.remove(spec.pidFile).catch(() => {});
      if (!spec.detached) await exited;
    },
  };
}

/**
 * State letter and command line of a process, through procps `ps`: Deno
 * requires --allow-all to read /proc/<pid>, which no permission set here has.
 */
function psInfo(pid: number): { state: string; args: string } | undefined {
  const out = new Deno.Command("ps", {
    args: ["-o", "stat=,args=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  if (!out.success) return undefined;
  const line = new TextDecoder().decode(out.stdout).trim();
  if (!line) return undefined;
  const space = line.indexOf(" ");
  return { state: line.slice(0, 1), args: space < 0 ? "" : line.slice(space + 1) };
}

/** True when a process with this pid exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  const info = psInfo(pid);
  return info !== undefined && info.state !== "Z" && info.state !== "X";
}

/**
 * Sends a signal through procps `kill`: `Deno.kill` needs an unrestricted
 * --allow-run, which the e2e permission set does not grant.
 */
function signal(pid: number, name: "TERM" | "KILL"): void {
  new Deno.Command("kill", { args: [`-${name}`, String(pid)], stdout: "null", stderr: "null" })
    .outputSync();
}

/** SIGTERM, wait up to `graceMs`, then SIGKILL. Returns when the process is gone. */
export async function stopPid(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  signal(pid, "TERM");
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) {
    signal(pid, "KILL");
    const hard = Date.now() + 5_000;
    while (isAlive(pid) && Date.now() < hard) await sleep(50);
  }
}

/**
 * Stops whatever process a pidfile names, if it still runs the expected program
 * (a pid can be reused), and removes the pidfile. For leftovers of a killed run.
 */
export async function stopFromPidFile(
  pidFile: string,
  program: string,
  graceMs = 10_000,
): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(pidFile);
  } catch {
    return;
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (Number.isInteger(pid) && pid > 1 && cmdlineMentions(pid, program)) {
    await stopPid(pid, graceMs);
  }
  await Deno.remove(pidFile).catch(() => {});
}

function cmdlineMentions(pid: number, program: string): boolean {
  return psInfo(pid)?.args.includes(program) ?? false;
}

/** Resolves after `ms` milliseconds (the project's one sleep, common/backoff.ts). */
export { sleep };

/** Last `lines` lines of a log file, for error messages. */
export async function tailLog(file: string, lines = 30): Promise<string> {
  try {
    const text = await Deno.readTextFile(file);
    return text.split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Polls `probe` until it returns true, the process exits, or `timeoutMs` passes.
 * Throws an error naming the service and quoting the end of its log.
 */
export async function waitReady(
  svc: ServiceProcess,
  probe: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | undefined;
  svc.exited.then((code) => exited = code);
  while (Date.now() < deadline) {
    if (exited !== undefined || !isAlive(svc.pid)) {
      throw new Error(
        `Service "${svc.name}" exited before it was ready (code ${exited ?? "unknown"}); ` +
          `end of ${svc.logFile}:\n${await tailLog(svc.logFile)}`,
      );
    }
    try {
      if (await probe()) return;
    } catch { /* not ready yet */ }
    await sleep(200);
  }
  throw new Error(
    `Service "${svc.name}" was not ready within ${timeoutMs} ms; end of ${svc.logFile}:\n${await tailLog(
      svc.logFile,
    )}`,
  );
}

/** Runs a command to completion; throws with its output when it fails. */
export async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string; stdin?: Uint8Array } = {},
): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    cwd: opts.cwd,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr);
    throw new Error(
      `Command "${cmd} ${args.join(" ")}" failed with code ${out.code}: ${
        stderr.trim() || stdout.trim()
      }`,
    );
  }
  return stdout;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * The first of `count` consecutive ports free on 127.0.0.1 right now (each was bound, then all
 * released): for a server that takes a port range. Like {@link freePort}, nothing holds them after.
 */
export function freePortRange(count: number): number {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = freePort();
    if (first + count > 65536) continue;
    const held: Deno.Listener[] = [];
    try {
      for (let p = first; p < first + count; p++) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: p }));
      }
      return first;
    } catch (err) {
      if (!(err instanceof Deno.errors.AddrInUse)) throw err;
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`No ${count} consecutive free ports found on 127.0.0.1`);
}
