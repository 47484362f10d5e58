/**
 * The Kubernetes API clients aranya uses, all behind ONE client-side rate
 * limit.
 *
 * `loadKubeConfig` finds the credentials: the given kubeconfig file, else the
 * KUBECONFIG variable (colon-separated files, merged as kubectl does; missing
 * ones are skipped), else the in-cluster service account
 * (`/var/run/secrets/kubernetes.io/serviceaccount` with
 * KUBERNETES_SERVICE_HOST/PORT).
 *
 * `makeKubeClients` builds every API client on one client-node
 * `Configuration` whose middleware, before each request, waits for a token of
 * the shared {@link RateLimiter} (honouring the request's abort signal) and
 * counts the request by verb in `aranya_api_requests_total{verb}` and, for
 * writes, in `aranya_api_writes_total`.
 *
 * Every request of these clients reuses one keep-alive connection pool
 * ({@link SharedAgentAuth}): client-node on its own makes a new HTTPS agent per
 * request, that is a new TLS connection per API call.
 *
 * Watches opened by client-node's `Watch`/informers do not go through this
 * configuration (they use the KubeConfig directly), so they are neither rate
 * limited nor counted; the LIST calls informers make through these clients are.
 *
 * @module
 */
import {
  type ConfigurationOptions,
  CoordinationV1Api,
  CoreV1Api,
  createConfiguration,
  CustomObjectsApi,
  EventsV1Api,
  KubeConfig,
  KubernetesObjectApi,
  type Middleware,
  Observable,
  type RequestContext,
  type ResponseContext,
  ServerConfiguration,
} from "@kubernetes/client-node";
import https from "node:https";
import { envLookup, type EnvSource, processEnv } from "../../common/env_expand.ts";
import { errorMessage, InvalidInputError, NotFoundError } from "../../common/errors.ts";
import type { AranyaMetrics } from "../metrics/registry.ts";
import type { RateLimiter } from "./rate_limiter.ts";

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
 * Loads the kubeconfig; see the module doc.
 *
 * @throws NotFoundError when a named file does not exist, or when there is no kubeconfig and
 *   aranya is not in a cluster; InvalidInputError when a file cannot be parsed.
 */
export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): KubeConfig {
  const lookup = envLookup(opts.env ?? processEnv);
  const get = (name: string) => {
    try {
      return lookup(name) || undefined;
    } catch {
      return undefined; // not allowed to read it: as if unset
    }
  };
  const kc = new KubeConfig();
  let files: string[] = [];
  if (opts.kubeconfig !== undefined) {
    files = [opts.kubeconfig];
  } else {
    const listed = (get("KUBECONFIG") ?? "").split(":").filter((f) => f !== "");
    // As kubectl does, missing files in KUBECONFIG are skipped; all missing is an error.
    files = listed.filter(exists);
    if (listed.length > 0 && files.length === 0) {
      throw new NotFoundError(`No file of KUBECONFIG "${listed.join(":")}" exists`);
    }
  }
  if (files.length > 0) {
    fromFile(kc, files[0]!);
    for (const file of files.slice(1)) {
      const more = new KubeConfig();
      fromFile(more, file);
      kc.mergeConfig(more);
    }
    if (!kc.getCurrentCluster()) {
      throw new InvalidInputError(
        `Kubeconfig "${files.join(":")}" has no current context with a cluster`,
      );
    }
    return kc;
  }
  const host = get("KUBERNETES_SERVICE_HOST");
  const port = get("KUBERNETES_SERVICE_PORT");
  if (!host || !port) {
    throw new NotFoundError(
      "No Kubernetes credentials: give --kubeconfig or set KUBECONFIG, or run in a pod " +
        "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set)",
    );
  }
  const prefix = opts.inClusterPathPrefix ?? "";
  try {
    Deno.statSync(`${prefix}${SERVICE_ACCOUNT_DIR}/token`);
  } catch (err) {
    throw new NotFoundError(
      `In-cluster config: cannot read the service account token "${prefix}${SERVICE_ACCOUNT_DIR}/token": ${
        errorMessage(err)
      }`,
      { cause: err },
    );
  }
  kc.loadFromCluster(prefix);
  // loadFromCluster reads the process environment itself; use the looked-up values.
  const scheme = ["80", "8080", "8001"].includes(port) ? "http" : "https";
  const server = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  kc.clusters = kc.clusters.map((c) => ({ ...c, server }));
  return kc;
}

function exists(file: string): boolean {
  try {
    Deno.statSync(file);
    return true;
  } catch {
    return false;
  }
}

function fromFile(kc: KubeConfig, file: string): void {
  try {
    kc.loadFromFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || (err as { code?: string })?.code === "ENOENT") {
      throw new NotFoundError(`Kubeconfig file "${file}" does not exist`, { cause: err });
    }
    throw new InvalidInputError(`Cannot load kubeconfig "${file}": ${errorMessage(err)}`, {
      cause: err,
    });
  }
}

/** The metrics the clients count into (an `AranyaMetrics` fits). */
export type ApiMetrics = Pick<
  AranyaMetrics,
  "apiRequestsTotal" | "apiWritesTotal" | "apiRateLimitWaitSecondsTotal"
>;

/** Options of {@link makeKubeClients}. */
export interface KubeClientsOptions {
  /** Shared by every request of every client made here. */
  limiter: RateLimiter;
  metrics?: ApiMetrics;
}

/** An API client class of client-node (CoreV1Api, AuthenticationV1Api, …). */
export type ApiClass<T> = new (configuration: ReturnType<typeof createConfiguration>) => T;

/** The API clients; every request goes through one rate limiter. */
export interface KubeClients {
  readonly kubeconfig: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly coordination: CoordinationV1Api;
  /** Generic create/read/patch/delete of any object (default namespace from the context). */
  readonly objects: KubernetesObjectApi;
  /** events.k8s.io/v1; core/v1 Events go through `core`. */
  readonly events: EventsV1Api;
  /** Another client-node API client on the same configuration (same limiter and metrics). */
  make<T>(api: ApiClass<T>): T;
}

/** The verbs of {@link apiVerb}. */
export type ApiVerb =
  | "get"
  | "list"
  | "watch"
  | "create"
  | "update"
  | "patch"
  | "delete"
  | "deletecollection"
  | "other";

const WRITES: ReadonlySet<ApiVerb> = new Set([
  "create",
  "update",
  "patch",
  "delete",
  "deletecollection",
]);

/** True for verbs that change objects. */
export function isWrite(verb: ApiVerb): boolean {
  return WRITES.has(verb);
}

/**
 * The Kubernetes verb of a request, from its method and URL: a GET of a collection
 * (`/api/v1/pods`, `/api/v1/namespaces/x/pods`, `/apis/g/v/namespaces/x/r`) is a list, or a watch
 * with `watch=true`; a GET of one object (or its subresource) is a get; DELETE of a collection
 * is deletecollection.
 */
export function apiVerb(method: string, url: string): ApiVerb {
  const u = new URL(url, "http://x");
  const segs = u.pathname.split("/").filter((s) => s !== "");
  let rest: string[] = [];
  if (segs[0] === "api") rest = segs.slice(2);
  else if (segs[0] === "apis") rest = segs.slice(3);
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  const collection = rest.length === 1;
  switch (method.toUpperCase()) {
    case "GET": {
      const watch = u.searchParams.get("watch");
      if (watch === "true" || watch === "1") return "watch";
      return collection ? "list" : "get";
    }
    case "HEAD":
      return "get";
    case "POST":
      return "create";
    case "PUT":
      return "update";
    case "PATCH":
      return "patch";
    case "DELETE":
      return collection ? "deletecollection" : "delete";
    default:
      return "other";
  }
}

/** KubernetesObjectApi on a given configuration (its own `makeApiClient` builds a fresh one). */
class ObjectApi extends KubernetesObjectApi {
  static on(configuration: ReturnType<typeof createConfiguration>, kc: KubeConfig): ObjectApi {
    const api = new ObjectApi(configuration);
    api.setDefaultNamespace(kc);
    return api;
  }
}

/** An https.Agent as client-node builds it (its constructor options are kept on it). */
type AgentWithOptions = https.Agent & { options?: https.AgentOptions };

/**
 * The kubeconfig's authentication (headers, client certificate, CA) with ONE
 * keep-alive agent for all requests. Hand-written because client-node's
 * `applySecurityAuthentication` creates a fresh https.Agent for every request
 * (dist/config.js `createAgent`): each API call then opened its own TLS
 * connection, which cost aranya milliseconds of CPU and a socket per call. The
 * headers are still applied per request (rotating in-cluster tokens keep
 * working); only the TLS agent, built once from the same options, is shared.
 * Proxied clusters keep client-node's own agents.
 */
export class SharedAgentAuth {
  readonly #kc: KubeConfig;
  #agent: https.Agent | undefined;

  constructor(kc: KubeConfig, readonly maxSockets = 32) {
    this.#kc = kc;
  }

  getName(): string {
    return "kubeconfig authentication with a shared agent";
  }

  async applySecurityAuthentication(ctx: RequestContext): Promise<void> {
    await this.#kc.applySecurityAuthentication(ctx);
    if (!this.#agent) {
      const fresh = ctx.getAgent() as AgentWithOptions | undefined;
      if (!(fresh instanceof https.Agent) || this.#kc.getCurrentCluster()?.proxyUrl) return;
      this.#agent = new https.Agent({
        ...fresh.options,
        keepAlive: true,
        maxSockets: this.maxSockets,
      });
    }
    ctx.setAgent(this.#agent);
  }
}

/** Builds the clients on `kc`; see the module doc. Does no I/O. */
export function makeKubeClients(kc: KubeConfig, opts: KubeClientsOptions): KubeClients {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new InvalidInputError("The kubeconfig has no current cluster");
  const { limiter, metrics } = opts;
  const middleware: Middleware = {
    async pre(ctx: RequestContext): Promise<RequestContext> {
      const started = performance.now();
      await limiter.acquire(ctx.getSignal());
      const verb = apiVerb(ctx.getHttpMethod(), ctx.getUrl());
      if (metrics) {
        const waited = (performance.now() - started) / 1000;
        if (waited > 0.001) metrics.apiRateLimitWaitSecondsTotal.inc(waited);
        metrics.apiRequestsTotal.inc({ verb });
        if (isWrite(verb)) metrics.apiWritesTotal.inc();
      }
      return ctx;
    },
    post: (rsp: ResponseContext) => Promise.resolve(rsp),
  };
  const configuration = createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: new SharedAgentAuth(kc) },
    promiseMiddleware: [middleware],
  });
  const make = <T>(api: ApiClass<T>): T => new api(configuration);
  const objects = ObjectApi.on(configuration, kc);
  return {
    kubeconfig: kc,
    core: make(CoreV1Api),
    custom: make(CustomObjectsApi),
    coordination: make(CoordinationV1Api),
    objects,
    events: make(EventsV1Api),
    make,
  };
}

/**
 * Per-call options that make one request of a generated API client abortable:
 * `core.readNode({ name }, withSignal(AbortSignal.timeout(5000)))`. The signal also cancels
 * the wait for a rate-limit token. (KubernetesObjectApi ignores per-call middleware.)
 */
export function withSignal(signal: AbortSignal): ConfigurationOptions {
  return {
    middleware: [{
      pre: (ctx: RequestContext) => {
        ctx.setSignal(signal);
        return new Observable(Promise.resolve(ctx));
      },
      post: (rsp: ResponseContext) => new Observable(Promise.resolve(rsp)),
    }],
    middlewareMergeStrategy: "prepend",
  };
}
