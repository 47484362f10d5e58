/**
 * Where aranya finds the Kubernetes API and the credentials for it.
 *
 * `loadKubeConfig` reads the given kubeconfig file, else the KUBECONFIG
 * variable (colon-separated files, merged as kubectl does: the first file to
 * name a cluster, user or context wins, missing files are skipped), else the
 * in-cluster service account (`/var/run/secrets/kubernetes.io/serviceaccount`
 * with KUBERNETES_SERVICE_HOST/PORT). The result is a {@link ClusterAccess}:
 * the server, its CA, and either a client certificate or a bearer token (a
 * token file is re-read, as in-cluster tokens rotate).
 *
 * Hand-written rather than client-node's KubeConfig: importing client-node at
 * run time costs aranya about 60 MB of its memory (its ~900 generated model
 * classes), measured in docs/scale.md; a kubeconfig is a small YAML document.
 * What aranya does not support is refused by name (exec and auth-provider
 * plugins, insecure-skip-tls-verify), never ignored.
 *
 * @module
 */
import { parse as parseYaml } from "yaml";
import { envLookup, type EnvSource, processEnv } from "@aranya/common/env_expand";
import { errorMessage, InvalidInputError, NotFoundError } from "@aranya/common/errors";
import { decodeBase64Text } from "@aranya/common/base64";

/** The API server and the credentials for it. */
export interface ClusterAccess {
  /** Base URL, e.g. `https://10.0.0.1:6443` (no trailing slash). */
  readonly server: string;
  /** PEM of the CA that signed the server's certificate (system roots when absent). */
  readonly caPem?: string;
  /** Client certificate and key (PEM), when the user authenticates with one. */
  readonly certPem?: string;
  readonly keyPem?: string;
  /** A bearer token given inline. */
  readonly token?: string;
  /** A file holding the bearer token, re-read as it rotates. */
  readonly tokenFile?: string;
  /** Basic authentication, when the kubeconfig user has username and password. */
  readonly basic?: { username: string; password: string };
  /** The context's namespace ("default" when unset). */
  readonly namespace: string;
}

/** Options of {@link loadKubeConfig}. */
export interface LoadKubeConfigOptions {
  /** A kubeconfig file; takes precedence over KUBECONFIG and the in-cluster config. */
  kubeconfig?: string;
  /** Where KUBECONFIG and KUBERNETES_SERVICE_HOST/PORT are looked up (default: the process). */
  env?: EnvSource;
  /**
   * Prefix of the service account directory for the in-cluster config (tests put a fake one
   * under a temporary directory); default "".
   */
  inClusterPathPrefix?: string;
}

/** Where the in-cluster service account files live. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * Loads the cluster access; see the module doc.
 *
 * @throws NotFoundError when a named file does not exist, or when there is no kubeconfig and
 *   aranya is not in a cluster; InvalidInputError when a file cannot be parsed or asks for
 *   something aranya does not support.
 */
export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): ClusterAccess {
  const lookup = envLookup(opts.env ?? processEnv);
  const get = (name: string) => {
    try {
      return lookup(name) || undefined;
    } catch {
      return undefined; // not allowed to read it: as if unset
    }
  };
  let files: string[];
  if (opts.kubeconfig !== undefined) {
    files = [opts.kubeconfig];
    if (!exists(opts.kubeconfig)) {
      throw new NotFoundError(`Kubeconfig file "${opts.kubeconfig}" does not exist`);
    }
  } else {
    const listed = (get("KUBECONFIG") ?? "").split(":").filter((f) => f !== "");
    // As kubectl does, missing files in KUBECONFIG are skipped; all missing is an error.
    files = listed.filter(exists);
    if (listed.length > 0 && files.length === 0) {
      throw new NotFoundError(`No file of KUBECONFIG "${listed.join(":")}" exists`);
    }
  }
  if (files.length > 0) return fromFiles(files);
  return inCluster(get, opts.inClusterPathPrefix ?? "");
}

function exists(file: string): boolean {
  try {
    Deno.statSync(file);
    return true;
  } catch {
    return false;
  }
}

/** A named entry of a kubeconfig list (`clusters`, `users`, `contexts`). */
interface Named {
  name?: string;
  [k: string]: unknown;
}

interface Merged {
  currentContext?: string;
  clusters: Map<string, { entry: Record<string, unknown>; dir: string }>;
  users: Map<string, { entry: Record<string, unknown>; dir: string }>;
  contexts: Map<string, Record<string, unknown>>;
}

function fromFiles(files: string[]): ClusterAccess {
  const merged: Merged = { clusters: new Map(), users: new Map(), contexts: new Map() };
  for (const file of files) {
    let doc: unknown;
    try {
      doc = parseYaml(Deno.readTextFileSync(file));
    } catch (err) {
      throw new InvalidInputError(`Cannot load kubeconfig "${file}": ${errorMessage(err)}`, {
        cause: err,
      });
    }
    if (doc === null || typeof doc !== "object") {
      throw new InvalidInputError(`Cannot load kubeconfig "${file}": not a YAML mapping`);
    }
    const d = doc as Record<string, unknown>;
    const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) || "/" : ".";
    merged.currentContext ??= (d["current-context"] as string | undefined) || undefined;
    const each = (key: string, add: (name: string, value: Record<string, unknown>) => void) => {
      const list = d[key];
      if (list === undefined || list === null) return;
      if (!Array.isArray(list)) {
        throw new InvalidInputError(`Kubeconfig "${file}": "${key}" must be a list`);
      }
      for (const item of list as Named[]) {
        const inner = item?.[key.slice(0, -1)];
        if (!item?.name || typeof inner !== "object" || inner === null) continue;
        add(item.name, inner as Record<string, unknown>);
      }
    };
    // The first file to name an entry wins (kubectl's merge rule).
    each("clusters", (n, v) => merged.clusters.has(n) || merged.clusters.set(n, { entry: v, dir }));
    each("users", (n, v) => merged.users.has(n) || merged.users.set(n, { entry: v, dir }));
    each("contexts", (n, v) => merged.contexts.has(n) || merged.contexts.set(n, v));
  }
  const where = `Kubeconfig "${files.join(":")}"`;
  const context = merged.currentContext ? merged.contexts.get(merged.currentContext) : undefined;
  const cluster = context ? merged.clusters.get(String(context.cluster ?? "")) : undefined;
  if (!context || !cluster) {
    throw new InvalidInputError(`${where} has no current context with a cluster`);
  }
  const c = cluster.entry;
  const server = String(c.server ?? "").replace(/\/+$/, "");
  if (!/^https?:\/\//.test(server)) {
    throw new InvalidInputError(`${where}: cluster "${context.cluster}" has no http(s) server`);
  }
  if (c["insecure-skip-tls-verify"] === true) {
    throw new InvalidInputError(
      `${where}: "insecure-skip-tls-verify" is not supported; give "certificate-authority"`,
    );
  }
  if (c["proxy-url"]) {
    throw new InvalidInputError(`${where}: "proxy-url" is not supported`);
  }
  const caPem = pem(c, "certificate-authority", cluster.dir, where);
  const user = context.user ? merged.users.get(String(context.user)) : undefined;
  const u = user?.entry ?? {};
  for (const unsupported of ["exec", "auth-provider", "as", "as-groups"]) {
    if (u[unsupported] !== undefined) {
      throw new InvalidInputError(
        `${where}: user "${context.user}" uses "${unsupported}", which aranya does not support; ` +
          "give a client certificate or a token",
      );
    }
  }
  const tokenFile = typeof u.tokenFile === "string" ? resolve(u.tokenFile, user!.dir) : undefined;
  return {
    server,
    caPem,
    certPem: pem(u, "client-certificate", user?.dir ?? ".", where),
    keyPem: pem(u, "client-key", user?.dir ?? ".", where),
    token: typeof u.token === "string" && u.token ? u.token : undefined,
    tokenFile,
    basic: typeof u.username === "string" && typeof u.password === "string"
      ? { username: u.username, password: u.password }
      : undefined,
    namespace: typeof context.namespace === "string" && context.namespace
      ? context.namespace
      : "default",
  };
}

function resolve(path: string, dir: string): string {
  return path.startsWith("/") ? path : `${dir}/${path}`;
}

/** `<key>-data` (base64) or `<key>` (a file, relative to the kubeconfig's folder). */
function pem(
  entry: Record<string, unknown>,
  key: string,
  dir: string,
  where: string,
): string | undefined {
  const data = entry[`${key}-data`];
  if (typeof data === "string" && data) {
    return decodeBase64Text(data, `${where}: "${key}-data"`);
  }
  const file = entry[key];
  if (typeof file !== "string" || !file) return undefined;
  try {
    return Deno.readTextFileSync(resolve(file, dir));
  } catch (err) {
    throw new InvalidInputError(
      `${where}: cannot read "${key}" file "${resolve(file, dir)}": ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

function inCluster(get: (name: string) => string | undefined, prefix: string): ClusterAccess {
  const host = get("KUBERNETES_SERVICE_HOST");
  const port = get("KUBERNETES_SERVICE_PORT");
  if (!host || !port) {
    throw new NotFoundError(
      "No Kubernetes credentials: give --kubeconfig or set KUBECONFIG, or run in a pod " +
        "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)",
    );
  }
  const dir = `${prefix}${SERVICE_ACCOUNT_DIR}`;
  try {
    Deno.statSync(`${dir}/token`);
  } catch (err) {
    throw new NotFoundError(
      `In-cluster config: cannot read the service account token "${dir}/token": ${
        errorMessage(err)
      }`,
      { cause: err },
    );
  }
  const read = (name: string) => {
    try {
      return Deno.readTextFileSync(`${dir}/${name}`).trim() || undefined;
    } catch {
      return undefined;
    }
  };
  const scheme = ["80", "8080", "8001"].includes(port) ? "http" : "https";
  return {
    server: `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`,
    caPem: read("ca.crt"),
    tokenFile: `${dir}/token`,
    namespace: read("namespace") ?? "default",
  };
}
