/**
 * Typed, validating reads of a parsed YAML/JSON config tree that collect every
 * problem instead of stopping at the first.
 *
 * A `ConfigReader` wraps one object of the tree and its path
 * (`connectivity.methods[1]`). Each read names a key, checks the value, expands
 * `${VAR}` references in strings (`env_expand.ts`), and on a problem records
 * `<path>.<key>: <what is wrong>` and returns undefined (or the default), so
 * validation goes on. `finish()` adds one problem per key that was never read
 * (a typo must not be silently ignored) and throws one {@link ConfigError}
 * listing all problems.
 */
import { parseDuration } from "./duration.ts";
import { type EnvSource, expandEnv } from "./env_expand.ts";
import { errorMessage, InvalidInputError, NotFoundError } from "./errors.ts";
import { parseDocument } from "yaml";

/** A config that failed validation; `problems` lists each, prefixed with its field path. */
export class ConfigError extends InvalidInputError {
  constructor(readonly source: string, readonly problems: readonly string[]) {
    super(
      `Invalid ${source} (${problems.length} ${
        problems.length === 1 ? "problem" : "problems"
      }):\n` +
        problems.map((p) => `  - ${p}`).join("\n"),
    );
  }
}

/** Problems shared by every reader of one config. */
export class ConfigProblems {
  readonly list: string[] = [];
  constructor(readonly env: EnvSource) {}

  /** Records `<path>: <message>`. */
  add(path: string, message: string): void {
    this.list.push(path === "" ? message : `${path}: ${message}`);
  }

  /** Throws a {@link ConfigError} naming `source` when anything was recorded. */
  throwIfAny(source: string): void {
    if (this.list.length > 0) throw new ConfigError(source, this.list);
  }
}

/** Common options of every read. */
interface ReadOptions {
  /** Record "is required" when the key is missing (or null). */
  required?: boolean;
  /** Never echo the value in a problem (tokens, passwords). */
  secret?: boolean;
}

/** Options of {@link ConfigReader.string}. */
export interface StringOptions extends ReadOptions {
  default?: string;
  /** Allowed values. */
  oneOf?: readonly string[];
  /** Returns what is wrong with the value, or undefined when it is fine. */
  check?: (value: string) => string | undefined;
}

/** Options of {@link ConfigReader.number}. */
export interface NumberOptions extends ReadOptions {
  default?: number;
  integer?: boolean;
  min?: number;
  max?: number;
}

/** Reads one object of a config tree; see the module doc. */
export class ConfigReader {
  readonly #obj: Record<string, unknown>;
  readonly #used = new Set<string>();
  /** Set when the object is missing or invalid although required: its fields are not reported missing. */
  readonly #quiet: boolean;

  /**
   * @param value the object to read; undefined and null read as an empty object, anything else
   *   that is not a plain object records a problem and reads as empty.
   * @param quiet do not report this object's required fields as missing (its absence was
   *   reported already).
   */
  constructor(
    value: unknown,
    readonly path: string,
    readonly problems: ConfigProblems,
    quiet = false,
  ) {
    this.#quiet = quiet;
    if (value === undefined || value === null) {
      this.#obj = {};
    } else if (typeof value === "object" && !Array.isArray(value)) {
      this.#obj = value as Record<string, unknown>;
    } else {
      const what = path === "" ? "the config must be a mapping" : "must be a mapping";
      problems.add(path, `${what}; got ${describe(value)}`);
      this.#obj = {};
      this.#quiet = true;
    }
  }

  /** True when `key` is present and not null. */
  has(key: string): boolean {
    const v = this.#obj[key];
    return v !== undefined && v !== null;
  }

  /** The path of `key` under this object. */
  pathOf(key: string): string {
    return this.path === "" ? key : `${this.path}.${key}`;
  }

  /** The keys present in this object, for mappings whose keys are data (labels, say). */
  keys(): string[] {
    return Object.keys(this.#obj);
  }

  /** Marks `key` as known without reading it. */
  ignore(key: string): void {
    this.#used.add(key);
  }

  /** A reader of the object under `key` (empty when missing). */
  object(key: string, opts: ReadOptions = {}): ConfigReader {
    const v = this.#raw(key, opts);
    const quiet = this.#quiet || (v === undefined && opts.required === true);
    return new ConfigReader(v, this.pathOf(key), this.problems, quiet);
  }

  /** Readers of each element of the list under `key` (none when missing). */
  objects(key: string, opts: ReadOptions = {}): ConfigReader[] {
    const v = this.#raw(key, opts);
    if (v === undefined) return [];
    if (!Array.isArray(v)) {
      this.problems.add(this.pathOf(key), `must be a list; got ${describe(v)}`);
      return [];
    }
    return v.map((item, i) =>
      new ConfigReader(item, `${this.pathOf(key)}[${i}]`, this.problems, this.#quiet)
    );
  }

  /** A string (after `${VAR}` expansion). */
  string(key: string, opts: StringOptions & { default: string }): string;
  string(key: string, opts?: StringOptions): string | undefined;
  string(key: string, opts: StringOptions = {}): string | undefined {
    const v = this.#raw(key, opts);
    if (v === undefined) return opts.default;
    const s = this.#scalar(key, v, opts);
    if (s === undefined) return opts.default;
    if (opts.oneOf && !opts.oneOf.includes(s)) {
      this.problems.add(
        this.pathOf(key),
        `must be one of ${opts.oneOf.map((o) => JSON.stringify(o)).join(", ")}; got ${
          opts.secret ? "another value" : JSON.stringify(s)
        }`,
      );
      return opts.default;
    }
    const wrong = opts.check?.(s);
    if (wrong !== undefined) {
      this.problems.add(
        this.pathOf(key),
        opts.secret ? wrong : `${wrong}; got ${JSON.stringify(s)}`,
      );
      return opts.default;
    }
    return s;
  }

  /** A list of strings (each expanded). */
  strings(key: string, opts: ReadOptions = {}): string[] | undefined {
    const v = this.#raw(key, opts);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) {
      this.problems.add(this.pathOf(key), `must be a list of strings; got ${describe(v)}`);
      return undefined;
    }
    const out: string[] = [];
    v.forEach((item, i) => {
      const s = this.#scalar(`${key}[${i}]`, item, opts);
      if (s !== undefined) out.push(s);
    });
    return out;
  }

  /** A number; strings (for example from `${VAR}`) that are plain decimal numbers count. */
  number(key: string, opts: NumberOptions & { default: number }): number;
  number(key: string, opts?: NumberOptions): number | undefined;
  number(key: string, opts: NumberOptions = {}): number | undefined {
    const kind = opts.integer ? "an integer" : "a number";
    const v = this.#raw(key, opts);
    if (v === undefined) return opts.default;
    let n = NaN;
    let shown: string;
    if (typeof v === "number") {
      n = v;
      shown = String(v);
    } else if (typeof v === "string") {
      const s = this.#expand(key, v);
      if (s === undefined) return opts.default;
      if (/^\s*-?(\d+(\.\d*)?|\.\d+)\s*$/.test(s)) n = Number(s);
      shown = JSON.stringify(s);
    } else {
      shown = describe(v);
    }
    if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n))) {
      this.problems.add(this.pathOf(key), `must be ${kind}; got ${shown}`);
      return opts.default;
    }
    if ((opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max)) {
      const range = opts.max === undefined
        ? `at least ${opts.min}`
        : opts.min === undefined
        ? `at most ${opts.max}`
        : `between ${opts.min} and ${opts.max}`;
      this.problems.add(this.pathOf(key), `must be ${range}; got ${n}`);
      return opts.default;
    }
    return n;
  }

  /** A boolean; the strings "true" and "false" (for example from `${VAR}`) count. */
  boolean(key: string, opts: ReadOptions & { default: boolean }): boolean;
  boolean(key: string, opts?: ReadOptions & { default?: boolean }): boolean | undefined;
  boolean(key: string, opts: ReadOptions & { default?: boolean } = {}): boolean | undefined {
    const v = this.#raw(key, opts);
    if (v === undefined) return opts.default;
    if (typeof v === "boolean") return v;
    let shown = describe(v);
    if (typeof v === "string") {
      const s = this.#expand(key, v);
      if (s === undefined) return opts.default;
      if (s === "true" || s === "false") return s === "true";
      shown = JSON.stringify(s);
    }
    this.problems.add(this.pathOf(key), `must be true or false; got ${shown}`);
    return opts.default;
  }

  /** A duration ("10s", "1m30s", "500ms"), in milliseconds. */
  duration(key: string, opts: ReadOptions & { default: string; min?: number }): number;
  duration(
    key: string,
    opts?: ReadOptions & { default?: string; min?: number },
  ): number | undefined;
  duration(
    key: string,
    opts: ReadOptions & { default?: string; min?: number } = {},
  ): number | undefined {
    const fallback = opts.default === undefined ? undefined : parseDuration(opts.default);
    const v = this.#raw(key, opts);
    if (v === undefined) return fallback;
    const s = this.#scalar(key, v, opts);
    if (s === undefined) return fallback;
    try {
      const ms = parseDuration(s);
      if (opts.min !== undefined && ms < opts.min) {
        this.problems.add(
          this.pathOf(key),
          `must be at least ${opts.min}ms; got ${JSON.stringify(s)}`,
        );
        return fallback;
      }
      return ms;
    } catch {
      this.problems.add(
        this.pathOf(key),
        `must be a duration such as "10s", "1m30s" or "500ms"; got ${JSON.stringify(s)}`,
      );
      return fallback;
    }
  }

  /** Records one problem per key of this object that no read asked for. */
  finish(): void {
    for (const key of Object.keys(this.#obj)) {
      if (!this.#used.has(key)) this.problems.add(this.pathOf(key), "unknown field");
    }
  }

  #raw(key: string, opts: ReadOptions): unknown {
    this.#used.add(key);
    const v = this.#obj[key];
    if (v === undefined || v === null) {
      if (opts.required && !this.#quiet) this.problems.add(this.pathOf(key), "is required");
      return undefined;
    }
    return v;
  }

  /** A string from a scalar: strings are expanded; numbers and booleans are refused. */
  #scalar(key: string, v: unknown, opts: ReadOptions): string | undefined {
    if (typeof v !== "string") {
      this.problems.add(
        this.pathOf(key),
        `must be a string; got ${opts.secret ? typeof v : describe(v)}`,
      );
      return undefined;
    }
    return this.#expand(key, v);
  }

  #expand(key: string, v: string): string | undefined {
    try {
      return expandEnv(v, this.problems.env);
    } catch (err) {
      const msg = errorMessage(err);
      this.problems.add(this.pathOf(key), msg.charAt(0).toLowerCase() + msg.slice(1));
      return undefined;
    }
  }
}

/** A short description of a YAML value for problems: `"text"`, `12`, `a list`, `a mapping`. */
function describe(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (v !== null && typeof v === "object") return "a mapping";
  return JSON.stringify(v) ?? String(v);
}

/**
 * The text of config file `path` (what `what` names in messages, e.g. `aranya config`).
 *
 * @throws NotFoundError when the file does not exist; the platform's error when it cannot be read.
 */
export async function readConfigFile(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new NotFoundError(`Config file "${path}" does not exist`, { cause: err });
    }
    throw err;
  }
}

/**
 * The tree of config YAML `text`, for a {@link ConfigReader}: duplicate keys are errors and at
 * most 100 aliases are expanded (no alias bombs).
 *
 * @throws ConfigError naming `source` with every YAML error.
 */
export function parseConfigYaml(text: string, problems: ConfigProblems, source: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  for (const err of doc.errors) problems.add("", `YAML: ${errorMessage(err).split("\n")[0]}`);
  problems.throwIfAny(source);
  return doc.toJS({ maxAliasCount: 100 });
}
