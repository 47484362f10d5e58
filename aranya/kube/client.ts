/**
 * The Kubernetes API clients aranya uses, all on one transport behind ONE
 * client-side rate limit.
 *
 * `loadKubeConfig` (kubeconfig.ts) finds the server and credentials;
 * `makeKubeClients` builds the typed API groups (apis.ts) on one
 * {@link KubeHttp} (kube_http.ts: the rate limit, the request metrics, the
 * kept connections). Watches go through the same transport (informer.ts):
 * counted, not rate limited.
 *
 * @module
 */
import { InvalidInputError } from "@aranya/common/errors";
import {
  AuthenticationApi,
  AuthorizationApi,
  CertificatesApi,
  CoordinationApi,
  CoreApi,
  CustomObjectsApi,
} from "./apis.ts";
import type { ClusterAccess } from "./kubeconfig.ts";
import { type ApiMetrics, KubeHttp, type RequestOptions } from "./kube_http.ts";
import type { RateLimiter } from "./rate_limiter.ts";

export { type ClusterAccess, loadKubeConfig, SERVICE_ACCOUNT_DIR } from "./kubeconfig.ts";
export { type ApiMetrics, type ApiVerb, apiVerb, isWrite } from "./kube_http.ts";

/** Options of {@link makeKubeClients}. */
export interface KubeClientsOptions {
  /** Shared by every request of every client made here; none: no client-side rate limit. */
  limiter?: RateLimiter;
  metrics?: ApiMetrics;
  /** Most requests in flight at once (KubeHttp's `maxInFlight`; default 32). */
  maxInFlight?: number;
  /** Longest a request may take, ms (KubeHttp's `timeoutMs`; default none). */
  timeoutMs?: number;
}

/** The API clients; every request goes through one rate limiter. */
export interface KubeClients {
  /** Where the clients connect, with which credentials. */
  readonly access: ClusterAccess;
  /** The transport under all of them (informers watch through it). */
  readonly http: KubeHttp;
  readonly core: CoreApi;
  readonly custom: CustomObjectsApi;
  readonly coordination: CoordinationApi;
  /**
   * Leases as heartbeats (membership and node Lease renewals): the same transport, but each
   * request takes the next free in-flight slot before any other waiting request.
   */
  readonly heartbeats: CoordinationApi;
  readonly certificates: CertificatesApi;
  readonly authentication: AuthenticationApi;
  readonly authorization: AuthorizationApi;
}

/** Builds the clients on `access`; see the module doc. Does no I/O. */
export function makeKubeClients(access: ClusterAccess, opts: KubeClientsOptions): KubeClients {
  if (!access.server) throw new InvalidInputError("The kubeconfig has no current cluster");
  const http = new KubeHttp(access, {
    limiter: opts.limiter,
    metrics: opts.metrics,
    maxInFlight: opts.maxInFlight,
    timeoutMs: opts.timeoutMs,
  });
  return {
    access,
    http,
    core: new CoreApi(http),
    custom: new CustomObjectsApi(http),
    coordination: new CoordinationApi(http),
    heartbeats: new CoordinationApi(http, { urgent: true }),
    certificates: new CertificatesApi(http),
    authentication: new AuthenticationApi(http),
    authorization: new AuthorizationApi(http),
  };
}

/**
 * Per-call options that make one request abortable:
 * `core.readNode({ name }, withSignal(AbortSignal.timeout(5000)))`. The signal also cancels
 * the wait for a rate-limit token.
 */
export function withSignal(signal: AbortSignal): RequestOptions {
  return { signal };
}
