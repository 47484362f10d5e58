/**
 * Reads the JUnit file the upstream e2e framework writes (`--report-dir`,
 * `junit_01.xml`: ginkgo v2's JUnit with timelines only for failed specs and
 * no failure message attribute) and turns it into the conformance run's
 * figures: which selected specs passed, failed (with a one-line cause),
 * were skipped at run time, or never ran (timeout, interrupted suite).
 *
 * Every spec of the suite appears in the file; those the focus left out are
 * `skipped` with the bare message "skipped" and are not counted. Suite nodes
 * (`[SynchronizedBeforeSuite]`, `[ReportAfterSuite]`, ...) are reported apart:
 * a failed BeforeSuite fails every spec without running it.
 */

/** One `<testcase>`. */
export interface JunitCase {
  /** The node type ginkgo puts first, e.g. "It", "SynchronizedBeforeSuite". */
  node: string;
  /** The spec's full name (without the node type). */
  name: string;
  /** ginkgo's state: passed, failed, skipped, pending, timedout, interrupted, aborted, panicked. */
  status: string;
  seconds: number;
  /** The failure, error or skip text, if any (entities decoded). */
  detail?: string;
}

/** The `<testsuite>`'s counters. */
export interface JunitSuite {
  tests: number;
  failures: number;
  errors: number;
  skipped: number;
  disabled: number;
  seconds: number;
  cases: JunitCase[];
}

const ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
};

/** Decodes XML entities and character references. */
export function decodeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (whole, e: string) => {
    if (e.startsWith("#x")) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith("#")) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ENTITIES[e] ?? whole;
  });
}

function attrs(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/([\w:-]+)="([^"]*)"/g)) out[m[1]!] = decodeXml(m[2]!);
  return out;
}

/** Parses ginkgo's JUnit XML (one suite; the framework writes exactly one). */
export function parseJunit(xml: string): JunitSuite {
  const suiteTag = xml.match(/<testsuite\s[^>]*>/)?.[0];
  if (!suiteTag) throw new Error("No <testsuite> element in the JUnit report");
  const s = attrs(suiteTag);
  const num = (k: string) => Number(s[k] ?? 0);
  const cases: JunitCase[] = [];
  const re = /<testcase\s([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    const a = attrs(m[1]!);
    const body = m[3] ?? "";
    const full = a.name ?? "";
    const node = full.match(/^\[([^\]]+)\]/)?.[1] ?? "";
    const name = node ? full.slice(node.length + 2).trim() : full;
    let detail: string | undefined;
    const fail = body.match(/<(failure|error)\b([^>]*?)(?:\/>|>([\s\S]*?)<\/\1>)/);
    if (fail) {
      const fa = attrs(fail[2] ?? "");
      detail = decodeXml(fail[3] ?? "").trim() || fa.message || fa.type;
    } else {
      const skip = body.match(/<skipped\b([^>]*?)(?:\/>|>)/);
      if (skip) detail = attrs(skip[1] ?? "").message;
    }
    cases.push({
      node,
      name,
      status: a.status ?? (fail ? "failed" : "passed"),
      seconds: Number(a.time ?? 0),
      ...(detail !== undefined ? { detail } : {}),
    });
  }
  return {
    tests: num("tests"),
    failures: num("failures"),
    errors: num("errors"),
    skipped: num("skipped"),
    disabled: num("disabled"),
    seconds: num("time"),
    cases,
  };
}

/**
 * One line saying why a spec failed: ginkgo's description from its first
 * "[FAILED]" (or "[TIMEDOUT]", "[PANICKED]", "[INTERRUPTED]") line up to the
 * "In [It] at:" location (gomega messages span lines), whitespace collapsed,
 * else the first non-empty line; at most `max` characters.
 */
export function oneLineCause(detail: string | undefined, max = 240): string {
  if (!detail) return "";
  const lines = detail.split("\n").map((l) => l.trim()).filter(Boolean);
  const start = lines.findIndex((l) => /^\[(FAILED|TIMEDOUT|PANICKED|INTERRUPTED)\]/.test(l));
  let picked = lines.slice(0, 1);
  if (start >= 0) {
    const end = lines.findIndex((l, i) => i > start && /^In \[[^\]]+\] at: /.test(l));
    picked = lines.slice(start, end < 0 ? undefined : end);
  }
  const line = picked.join(" ").replace(/\s+/g, " ");
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

/** A selected spec's outcome. */
export interface Outcome {
  name: string;
  seconds: number;
  cause?: string;
}

/** The run's figures over the specs it meant to run. */
export interface RunFigures {
  passed: Outcome[];
  failed: Outcome[];
  /** Skipped by the suite at run time (e2eskipper), with its message. */
  skippedAtRuntime: Outcome[];
  /** Meant to run but absent, left out or interrupted (overall timeout, interrupted suite). */
  notRun: string[];
  /** Suite nodes that failed (a failed BeforeSuite fails the whole run). */
  suiteFailures: Outcome[];
}

const FAILED = new Set(["failed", "timedout", "aborted", "panicked"]);

/** Sorts the report's cases for `run` (the names e2e.test was asked to run) into figures. */
export function figures(suite: JunitSuite, run: string[]): RunFigures {
  const byName = new Map<string, JunitCase>();
  for (const c of suite.cases) if (c.node === "It") byName.set(c.name, c);
  const out: RunFigures = {
    passed: [],
    failed: [],
    skippedAtRuntime: [],
    notRun: [],
    suiteFailures: [],
  };
  for (const name of run) {
    const c = byName.get(name);
    if (!c) {
      out.notRun.push(name);
      continue;
    }
    const o = { name, seconds: c.seconds };
    if (c.status === "passed") out.passed.push(o);
    else if (FAILED.has(c.status)) out.failed.push({ ...o, cause: oneLineCause(c.detail) });
    else if (c.status === "skipped" && c.detail && c.detail !== "skipped") {
      out.skippedAtRuntime.push({ ...o, cause: c.detail.replace(/^skipped - /, "") });
    } else out.notRun.push(name);
  }
  for (const c of suite.cases) {
    if (c.node !== "It" && (FAILED.has(c.status) || c.status === "interrupted")) {
      out.suiteFailures.push({
        name: `[${c.node}] ${c.name}`.trim(),
        seconds: c.seconds,
        cause: oneLineCause(c.detail),
      });
    }
  }
  return out;
}

/** Human-readable lines: counts, then every failure with its cause. */
export function summaryLines(f: RunFigures, junitFile: string): string[] {
  const lines = [
    `JUnit ${junitFile}: ${f.passed.length} passed, ${f.failed.length} failed, ${f.skippedAtRuntime.length} skipped at run time, ${f.notRun.length} not run`,
  ];
  for (const s of f.suiteFailures) lines.push(`  SUITE FAILED ${s.name}: ${s.cause}`);
  for (const x of f.failed) lines.push(`  FAILED ${x.name}\n         ${x.cause}`);
  for (const x of f.skippedAtRuntime) lines.push(`  SKIPPED ${x.name}: ${x.cause}`);
  return lines;
}

/** The specs a report ran: every `It` case the focus did not leave out. */
export function ranSpecs(suite: JunitSuite): string[] {
  return suite.cases.filter((c) =>
    c.node === "It" && !(c.status === "skipped" && (c.detail ?? "skipped") === "skipped")
  ).map((c) => c.name);
}

// `deno run -P=e2e e2e/conformance/report.ts [junit_01.xml]`: the summary of a past run's report.
if (import.meta.main) {
  const file = Deno.args[0] ??
    new URL("../../.cache/conformance/run-main/report/junit_01.xml", import.meta.url).pathname;
  const suite = parseJunit(await Deno.readTextFile(file));
  for (const l of summaryLines(figures(suite, ranSpecs(suite)), file)) console.log(l);
}
