/**
 * One copy of each repeated string in the objects aranya keeps.
 *
 * `JSON.parse` makes a new string for every string value it reads, so a cache of a thousand Nodes
 * holds a thousand copies of "MemoryPressure", of the namespace's name, of each condition's
 * message and of most timestamps. A heap snapshot of aranya with 1,000 devices held 293,000
 * strings (19 MB, a quarter of its heap), most of them such copies. The pool replaces each string
 * value of an object, as it enters a cache, with the one copy it already holds.
 *
 * Bounded: once it holds `maxEntries` strings it starts empty again (strings already shared stay
 * shared; only later copies are not matched with them). Strings longer than `maxLength` (a
 * certificate, a large annotation) are left as they are.
 *
 * @module
 */

/** Options of {@link StringPool}. */
export interface StringPoolOptions {
  /** Most strings held before the pool starts empty again (default 100,000). */
  maxEntries?: number;
  /** Longest string pooled, in UTF-16 code units (default 256). */
  maxLength?: number;
}

/** See the module doc. */
export class StringPool {
  readonly #strings = new Map<string, string>();
  readonly #maxEntries: number;
  readonly #maxLength: number;

  constructor(opts: StringPoolOptions = {}) {
    this.#maxEntries = opts.maxEntries ?? 100_000;
    this.#maxLength = opts.maxLength ?? 256;
  }

  /** Strings held now. */
  get size(): number {
    return this.#strings.size;
  }

  /** The pooled copy of `s` (`s` itself the first time it is seen). */
  string(s: string): string {
    if (s.length > this.#maxLength) return s;
    const have = this.#strings.get(s);
    if (have !== undefined) return have;
    if (this.#strings.size >= this.#maxEntries) this.#strings.clear();
    this.#strings.set(s, s);
    return s;
  }

  /**
   * Replaces, in place, every string value in `value` (plain objects and arrays, as JSON.parse
   * makes them, any depth) with its pooled copy; returns `value`. Property names are left alone
   * (V8 already keeps one copy of those).
   */
  shareStrings<T>(value: T): T {
    this.#walk(value as unknown, 0);
    return value;
  }

  #walk(v: unknown, depth: number): void {
    // API objects are shallow; the bound only guards against a pathological input.
    if (depth > 64 || v === null || typeof v !== "object" || ArrayBuffer.isView(v)) return;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x = v[i];
        if (typeof x === "string") v[i] = this.string(x);
        else if (x !== null && typeof x === "object") this.#walk(x, depth + 1);
      }
      return;
    }
    const o = v as Record<string, unknown>;
    for (const k in o) {
      const x = o[k];
      if (typeof x === "string") o[k] = this.string(x);
      else if (x !== null && typeof x === "object") this.#walk(x, depth + 1);
    }
  }
}

/** The pool every cache of the process shares (the same namespace names, reasons, versions). */
export const cachedStrings: StringPool = new StringPool();
