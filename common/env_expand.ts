/**
 * `${VAR}` and `${VAR:-default}` expansion in config values.
 *
 * - `${VAR}`: the value of VAR; an unset variable is an error.
 * - `${VAR:-default}`: the value of VAR, or `default` when VAR is unset or empty (as in sh).
 *   The default is literal text up to the first `}`.
 * - `$${` writes a literal `${`. Any other `$` is kept as it is (`$HOME`, `pa$$word`).
 *
 * Names are `[A-Za-z_][A-Za-z0-9_]*`. Expanded values are not expanded again.
 */
import { InvalidInputError } from "./errors.ts";

/** Looks up an environment variable; undefined when unset. */
export type EnvLookup = (name: string) => string | undefined;

/** A lookup function, or a plain record of variables (as `Deno.env.toObject()` returns). */
export type EnvSource = EnvLookup | Readonly<Record<string, string | undefined>>;

/** A lookup over `source`. */
export function envLookup(source: EnvSource): EnvLookup {
  if (typeof source === "function") return source;
  return (name) => Object.hasOwn(source, name) ? source[name] : undefined;
}

/** The process environment, read one variable at a time (needs `--allow-env` for those names). */
export function processEnv(name: string): string | undefined {
  return Deno.env.get(name);
}

const TOKEN = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * `text` with its references expanded; see the module doc.
 *
 * @throws InvalidInputError naming the variable when one is unset without a default, when a
 *   reference is malformed or unterminated, or when the lookup itself fails (for example for
 *   lack of `--allow-env`).
 */
export function expandEnv(text: string, env: EnvSource): string {
  const lookup = envLookup(env);
  return text.replace(TOKEN, (match, body: string | undefined) => {
    if (match === "$${") return "${";
    if (body === undefined) {
      throw new InvalidInputError(`Unterminated "\${" in "${text}"`);
    }
    const sep = body.indexOf(":-");
    const name = sep < 0 ? body : body.slice(0, sep);
    if (!NAME.test(name)) {
      throw new InvalidInputError(
        `Invalid variable reference "${match}": names are letters, digits and "_"`,
      );
    }
    let value: string | undefined;
    try {
      value = lookup(name);
    } catch (err) {
      throw new InvalidInputError(
        `Cannot read environment variable "${name}": ${err instanceof Error ? err.message : err}`,
        { cause: err },
      );
    }
    if (sep >= 0) return value === undefined || value === "" ? body.slice(sep + 2) : value;
    if (value === undefined) {
      throw new InvalidInputError(
        `Environment variable "${name}" is not set and "${match}" gives no default`,
      );
    }
    return value;
  });
}
