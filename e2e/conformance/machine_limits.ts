/**
 * Specs this machine cannot run for a reason of the machine, not of the edge
 * model (machine_limits.yaml): each entry names the runtime it concerns and
 * the fact it needs; it applies only where that fact is false, and a spec it
 * applies to is reported as skipped with the reason, apart from the skip
 * list (which holds the edge model's reasons only).
 */
import { parse } from "yaml";
import { run } from "../process.ts";
import type { NamePattern } from "./selection.ts";

/** What a spec may need of the machine. */
export interface MachineFacts {
  /**
   * Root holds every capability the kernel knows in its bounding set. A
   * privileged container on dockerd 20.10 asks for all of them; Podman asks
   * only for those the bounding set has.
   */
  allCapabilities: boolean;
}

/** The facts of this machine (capabilities as a child process inherits them). */
export async function machineFacts(): Promise<MachineFacts> {
  const status = await run("cat", ["/proc/self/status"]);
  const bnd = BigInt(`0x${status.match(/^CapBnd:\s*([0-9a-f]+)/m)?.[1] ?? "0"}`);
  const last = Number((await run("cat", ["/proc/sys/kernel/cap_last_cap"])).trim());
  const all = (1n << BigInt(last + 1)) - 1n;
  return { allCapabilities: (bnd & all) === all };
}

/** The entries of `text` that apply to `runtime` on a machine with `facts`. */
export function applicableLimits(
  text: string,
  runtime: string,
  facts: MachineFacts,
): NamePattern[] {
  const doc = parse(text) as { limits?: unknown } | null;
  const list = doc?.limits ?? [];
  if (!Array.isArray(list)) throw new Error(`"limits" in machine_limits.yaml must be a list`);
  const out: NamePattern[] = [];
  for (const [i, e] of list.entries()) {
    const entry = e as { test?: unknown; runtime?: unknown; requires?: unknown; reason?: unknown };
    if (
      typeof entry.test !== "string" || typeof entry.reason !== "string" ||
      typeof entry.runtime !== "string" || typeof entry.requires !== "string"
    ) {
      throw new Error(`Entry ${i} of machine_limits.yaml needs test, runtime, requires and reason`);
    }
    if (!(entry.requires in facts)) {
      throw new Error(`Entry ${i} of machine_limits.yaml requires "${entry.requires}", unknown`);
    }
    new RegExp(entry.test);
    const fact = facts[entry.requires as keyof MachineFacts];
    if ((entry.runtime === runtime || entry.runtime === "any") && !fact) {
      out.push({ test: entry.test, reason: `this machine: ${entry.reason}` });
    }
  }
  return out;
}
