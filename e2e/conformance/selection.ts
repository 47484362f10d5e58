/**
 * Which upstream specs a conformance run selects, computed from
 * `e2e.test --list-tests` (every spec's source file and full name):
 *
 * - in scope: a `[Conformance]` spec of the packages apps, auth, common, node,
 *   scheduling, storage (by source file, so common/network's pod networking
 *   checks count too), without `[Serial]` or `[Disruptive]`;
 * - selected: in scope and matching the run's `--focus` (all when none);
 * - skipped: selected and matching an entry of skip_list.yaml;
 * - run: the rest, handed to ginkgo as one focus regex of their exact names.
 *
 * Ginkgo only ORs focus strings, so narrowing by package, by `--focus` and by
 * the skip list at once is done here; the regex then names exactly the specs
 * to run (anchored at the end: ginkgo matches against a text that does not
 * start with the name).
 */
import { parse } from "yaml";

/** One spec as `e2e.test --list-tests` prints it. */
export interface ListedSpec {
  /** Source file, e.g. "k8s.io/kubernetes@v1.34.4/test/e2e/common/node/pods.go". */
  file: string;
  /** Full name, e.g. "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]". */
  name: string;
}

/** The packages (under test/e2e/) whose conformance specs are in scope. */
export const PACKAGES = ["apps", "auth", "common", "node", "scheduling", "storage"] as const;

const LINE = /^\s+(\S+\.go):\d+: (.+)$/;

/** Parses the output of `e2e.test --list-tests`. */
export function parseSpecList(output: string): ListedSpec[] {
  const out: ListedSpec[] = [];
  for (const line of output.split("\n")) {
    const m = line.match(LINE);
    if (m) out.push({ file: m[1]!, name: m[2]!.trimEnd() });
  }
  return out;
}

const PACKAGE_RE = new RegExp(`(?:^|/)test/e2e/(?:${PACKAGES.join("|")})/`);

/** True for a spec the conformance run covers at all. */
export function inScope(s: ListedSpec): boolean {
  return PACKAGE_RE.test(s.file) && s.name.includes("[Conformance]") &&
    !s.name.includes("[Serial]") && !s.name.includes("[Disruptive]");
}

/** A name pattern with its reason (skip_list.yaml, reachable_only_here.yaml). */
export interface NamePattern {
  test: string;
  reason: string;
}

/** Reads the list under `key` of a YAML file of `{test, reason|why}` entries; validates the regexes. */
export async function loadPatterns(file: string, key: string): Promise<NamePattern[]> {
  const doc = parse(await Deno.readTextFile(file)) as Record<string, unknown> | null;
  const list = doc?.[key] ?? [];
  if (!Array.isArray(list)) throw new Error(`"${key}" in "${file}" must be a list`);
  return list.map((e, i) => {
    const entry = e as { test?: unknown; reason?: unknown; why?: unknown };
    const reason = entry.reason ?? entry.why;
    if (typeof entry.test !== "string" || typeof reason !== "string" || !reason.trim()) {
      throw new Error(`Entry ${i} of "${key}" in "${file}" needs "test" (a regex) and a reason`);
    }
    try {
      new RegExp(entry.test);
    } catch (err) {
      throw new Error(`Entry ${i} of "${key}" in "${file}": bad regex "${entry.test}": ${err}`);
    }
    return { test: entry.test, reason };
  });
}

/** The first pattern matching `name`, if any. */
export function firstMatch(name: string, patterns: NamePattern[]): NamePattern | undefined {
  return patterns.find((p) => new RegExp(p.test).test(name));
}

/** A run's selection. */
export interface Selection {
  /** In scope and matching the focus. */
  selected: string[];
  /** Selected but in the skip list, with the entry's reason. */
  skipped: { name: string; reason: string }[];
  /** Selected and not skipped: what e2e.test runs. */
  run: string[];
  /** Selected but not run for a reason of this machine (machine_limits.yaml), with it. */
  machineLimited?: { name: string; reason: string }[];
}

/** Computes the selection from the listed specs, an optional focus regex and the skip list. */
export function select(
  specs: ListedSpec[],
  opts: { focus?: string; skipList: NamePattern[] },
): Selection {
  const focus = opts.focus ? new RegExp(opts.focus) : undefined;
  const selected = [...new Set(specs.filter(inScope).map((s) => s.name))]
    .filter((n) => !focus || focus.test(n)).sort();
  const skipped: Selection["skipped"] = [];
  const run: string[] = [];
  for (const name of selected) {
    const hit = firstMatch(name, opts.skipList);
    if (hit) skipped.push({ name, reason: hit.reason });
    else run.push(name);
  }
  return { selected, skipped, run };
}

/** Escapes a literal for both RE2 (Go) and JavaScript regexes. */
export function escapeRegex(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|]/g, "\\$&");
}

/** One ginkgo focus regex naming exactly `names` (end-anchored). */
export function focusRegex(names: string[]): string {
  return `(?:${names.map(escapeRegex).join("|")})$`;
}

/**
 * The names of `all` that {@link focusRegex}(`names`) matches besides `names`
 * (a selected name that is the tail of another spec's name); empty normally.
 */
export function overreach(all: string[], names: string[]): string[] {
  const re = new RegExp(focusRegex(names));
  const want = new Set(names);
  return all.filter((n) => !want.has(n) && re.test(n));
}
