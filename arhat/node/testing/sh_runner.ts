/**
 * Test helper: a `CommandRunner` that works under the e2e permission set.
 * When `cmd` itself may be run it is run directly; otherwise it is started
 * through `sh` (which the e2e set allows), so tests exercise the real `cat`
 * and `df` either way.
 */
import { type CommandOutput, runCommand } from "../system_probe.ts";

/** Runs `cmd` directly when permitted, else as `sh -c 'exec "$0" "$@"' cmd args…`. */
export function permittedRunner(cmd: string, args: string[]): Promise<CommandOutput> {
  const direct = Deno.permissions.querySync({ name: "run", command: cmd }).state === "granted";
  return direct ? runCommand(cmd, args) : runCommand("sh", ["-c", 'exec "$0" "$@"', cmd, ...args]);
}
