/**
 * The typed Kubernetes API calls aranya makes, on {@link KubeHttp}.
 *
 * The method names and their single parameter object are client-node's (so a
 * reader who knows client-node knows these), the types are client-node's
 * (type-only imports: nothing of client-node is loaded at run time), and the
 * objects are the API server's JSON as is: timestamps are RFC 3339 strings,
 * not Date objects. Only the calls aranya makes are here; each rejects as
 * {@link KubeHttp.request} does (ApiError with the HTTP status).
 *
 * @module
 */
import type {
  AuthenticationV1TokenRequest,
  CoreV1Event,
  CoreV1EventList,
  V1CertificateSigningRequest,
  V1ConfigMap,
  V1DeleteOptions,
  V1Lease,
  V1LeaseList,
  V1MicroTime,
  V1Namespace,
  V1NamespaceList,
  V1Node,
  V1NodeList,
  V1Pod,
  V1PodList,
  V1Secret,
  V1SelfSubjectReview,
  V1ServiceList,
  V1Status,
  V1SubjectAccessReview,
  V1TokenReview,
} from "@kubernetes/client-node";
import { type KubeHttp, PATCH, type Query, type RequestOptions } from "./kube_http.ts";

/** List parameters. */
export interface ListParams {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  resourceVersion?: string;
}

/**
 * One resource (e.g. pods) of an API group version; paths and the five verbs.
 *
 * The API classes keep their state in TypeScript-private fields, not `#` fields, so a test may
 * wrap one in a Proxy (to fail some calls) and the methods still work through it.
 */
class Resource<T, L = unknown> {
  constructor(
    readonly http: KubeHttp,
    /** `/api/v1` or `/apis/<group>/<version>`. */
    readonly base: string,
    readonly plural: string,
  ) {}

  path(namespace?: string, name?: string, sub?: string): string {
    const ns = namespace ? `/namespaces/${encodeURIComponent(namespace)}` : "";
    const n = name ? `/${encodeURIComponent(name)}` : "";
    return `${this.base}${ns}/${this.plural}${n}${sub ? `/${sub}` : ""}`;
  }

  get(namespace: string | undefined, name: string, opts?: RequestOptions): Promise<T> {
    return this.http.request({ method: "GET", path: this.path(namespace, name), ...opts });
  }

  list(namespace: string | undefined, q: ListParams = {}, opts?: RequestOptions): Promise<L> {
    return this.http.request({
      method: "GET",
      path: this.path(namespace),
      query: q as Query,
      ...opts,
    });
  }

  create<B = T, R = T>(namespace: string | undefined, body: B, opts?: RequestOptions): Promise<R> {
    return this.http.request({ method: "POST", path: this.path(namespace), body, ...opts });
  }

  replace(
    namespace: string | undefined,
    name: string,
    body: T,
    sub?: string,
    opts?: RequestOptions,
  ): Promise<T> {
    return this.http.request({
      method: "PUT",
      path: this.path(namespace, name, sub),
      body,
      ...opts,
    });
  }

  patch(
    namespace: string | undefined,
    name: string,
    body: unknown,
    sub?: string,
    opts?: RequestOptions,
  ): Promise<T> {
    return this.http.request({
      method: "PATCH",
      path: this.path(namespace, name, sub),
      body,
      ...opts,
      // client-node's default patch type: a JSON patch.
      contentType: opts?.contentType ?? PATCH.json,
    });
  }

  delete(
    namespace: string | undefined,
    name: string,
    body?: V1DeleteOptions,
    opts?: RequestOptions,
  ): Promise<V1Status | T> {
    return this.http.request({
      method: "DELETE",
      path: this.path(namespace, name),
      body,
      ...opts,
    });
  }
}

type Named = { name: string };
type InNamespace = { name: string; namespace: string };
type Listing = { namespace: string } & ListParams;

/** The core (v1) group. */
export class CoreApi {
  private readonly nodes: Resource<V1Node, V1NodeList>;
  private readonly namespaces: Resource<V1Namespace, V1NamespaceList>;
  private readonly pods: Resource<V1Pod, V1PodList>;
  private readonly secrets: Resource<V1Secret>;
  private readonly configMaps: Resource<V1ConfigMap>;
  private readonly services: Resource<unknown, V1ServiceList>;
  private readonly serviceAccounts: Resource<unknown>;
  private readonly events: Resource<CoreV1Event, CoreV1EventList>;
  private readonly http: KubeHttp;

  constructor(http: KubeHttp) {
    this.http = http;
    const r = <T, L = unknown>(plural: string) => new Resource<T, L>(http, "/api/v1", plural);
    this.nodes = r("nodes");
    this.namespaces = r("namespaces");
    this.pods = r("pods");
    this.secrets = r("secrets");
    this.configMaps = r("configmaps");
    this.services = r("services");
    this.serviceAccounts = r("serviceaccounts");
    this.events = r("events");
  }

  readNode(p: Named, o?: RequestOptions): Promise<V1Node> {
    return this.nodes.get(undefined, p.name, o);
  }
  listNode(p: ListParams = {}, o?: RequestOptions): Promise<V1NodeList> {
    return this.nodes.list(undefined, p, o);
  }
  createNode(p: { body: V1Node }, o?: RequestOptions): Promise<V1Node> {
    return this.nodes.create(undefined, p.body, o);
  }
  replaceNode(p: Named & { body: V1Node }, o?: RequestOptions): Promise<V1Node> {
    return this.nodes.replace(undefined, p.name, p.body, undefined, o);
  }
  replaceNodeStatus(p: Named & { body: V1Node }, o?: RequestOptions): Promise<V1Node> {
    return this.nodes.replace(undefined, p.name, p.body, "status", o);
  }
  deleteNode(p: Named & { body?: V1DeleteOptions }, o?: RequestOptions): Promise<unknown> {
    return this.nodes.delete(undefined, p.name, p.body, o);
  }

  readNamespace(p: Named, o?: RequestOptions): Promise<V1Namespace> {
    return this.namespaces.get(undefined, p.name, o);
  }
  listNamespace(p: ListParams = {}, o?: RequestOptions): Promise<V1NamespaceList> {
    return this.namespaces.list(undefined, p, o);
  }

  readNamespacedPod(p: InNamespace, o?: RequestOptions): Promise<V1Pod> {
    return this.pods.get(p.namespace, p.name, o);
  }
  listNamespacedPod(p: Listing, o?: RequestOptions): Promise<V1PodList> {
    const { namespace, ...q } = p;
    return this.pods.list(namespace, q, o);
  }
  listPodForAllNamespaces(p: ListParams = {}, o?: RequestOptions): Promise<V1PodList> {
    return this.pods.list(undefined, p, o);
  }
  createNamespacedPod(p: { namespace: string; body: V1Pod }, o?: RequestOptions): Promise<V1Pod> {
    return this.pods.create(p.namespace, p.body, o);
  }
  deleteNamespacedPod(
    p: InNamespace & { body?: V1DeleteOptions },
    o?: RequestOptions,
  ): Promise<unknown> {
    return this.pods.delete(p.namespace, p.name, p.body, o);
  }
  replaceNamespacedPodStatus(p: InNamespace & { body: V1Pod }, o?: RequestOptions): Promise<V1Pod> {
    return this.pods.replace(p.namespace, p.name, p.body, "status", o);
  }
  /** A patch of the status; the patch type comes from `o.contentType` (default: JSON patch). */
  patchNamespacedPodStatus(p: InNamespace & { body: unknown }, o?: RequestOptions): Promise<V1Pod> {
    return this.pods.patch(p.namespace, p.name, p.body, "status", o);
  }

  readNamespacedSecret(p: InNamespace, o?: RequestOptions): Promise<V1Secret> {
    return this.secrets.get(p.namespace, p.name, o);
  }
  createNamespacedSecret(
    p: { namespace: string; body: V1Secret },
    o?: RequestOptions,
  ): Promise<V1Secret> {
    return this.secrets.create(p.namespace, p.body, o);
  }
  deleteNamespacedSecret(
    p: InNamespace & { body?: V1DeleteOptions },
    o?: RequestOptions,
  ): Promise<unknown> {
    return this.secrets.delete(p.namespace, p.name, p.body, o);
  }

  readNamespacedConfigMap(p: InNamespace, o?: RequestOptions): Promise<V1ConfigMap> {
    return this.configMaps.get(p.namespace, p.name, o);
  }
  createNamespacedConfigMap(
    p: { namespace: string; body: V1ConfigMap },
    o?: RequestOptions,
  ): Promise<V1ConfigMap> {
    return this.configMaps.create(p.namespace, p.body, o);
  }
  patchNamespacedConfigMap(
    p: InNamespace & { body: unknown },
    o?: RequestOptions,
  ): Promise<V1ConfigMap> {
    return this.configMaps.patch(p.namespace, p.name, p.body, undefined, o);
  }
  deleteNamespacedConfigMap(p: InNamespace, o?: RequestOptions): Promise<unknown> {
    return this.configMaps.delete(p.namespace, p.name, undefined, o);
  }

  listNamespacedService(p: Listing, o?: RequestOptions): Promise<V1ServiceList> {
    const { namespace, ...q } = p;
    return this.services.list(namespace, q, o);
  }

  createNamespacedServiceAccountToken(
    p: InNamespace & { body: AuthenticationV1TokenRequest },
    o?: RequestOptions,
  ): Promise<AuthenticationV1TokenRequest> {
    return this.http.request({
      method: "POST",
      path: this.serviceAccounts.path(p.namespace, p.name, "token"),
      body: p.body,
      ...o,
    });
  }

  createNamespacedEvent(
    p: { namespace: string; body: CoreV1Event },
    o?: RequestOptions,
  ): Promise<CoreV1Event> {
    return this.events.create(p.namespace, p.body, o);
  }
  /** A patch of an Event; the patch type comes from `o.contentType` (default: JSON patch). */
  patchNamespacedEvent(
    p: InNamespace & { body: unknown },
    o?: RequestOptions,
  ): Promise<CoreV1Event> {
    return this.events.patch(p.namespace, p.name, p.body, undefined, o);
  }
  deleteNamespacedEvent(p: InNamespace, o?: RequestOptions): Promise<unknown> {
    return this.events.delete(p.namespace, p.name, undefined, o);
  }
  listNamespacedEvent(p: Listing, o?: RequestOptions): Promise<CoreV1EventList> {
    const { namespace, ...q } = p;
    return this.events.list(namespace, q, o);
  }
}

/** coordination.k8s.io/v1 Leases. */
export class CoordinationApi {
  private readonly leases: Resource<V1Lease, V1LeaseList>;
  /** Options every call of this client carries (a call's own override them). */
  private readonly defaults: RequestOptions;

  /** `defaults`: e.g. `{ urgent: true }` for a client of heartbeats. */
  constructor(http: KubeHttp, defaults: RequestOptions = {}) {
    this.leases = new Resource(http, "/apis/coordination.k8s.io/v1", "leases");
    this.defaults = defaults;
  }

  private opts(o?: RequestOptions): RequestOptions {
    return { ...this.defaults, ...o };
  }

  readNamespacedLease(p: InNamespace, o?: RequestOptions): Promise<V1Lease> {
    return this.leases.get(p.namespace, p.name, this.opts(o));
  }
  listNamespacedLease(p: Listing, o?: RequestOptions): Promise<V1LeaseList> {
    const { namespace, ...q } = p;
    return this.leases.list(namespace, q, this.opts(o));
  }
  createNamespacedLease(
    p: { namespace: string; body: V1Lease },
    o?: RequestOptions,
  ): Promise<V1Lease> {
    return this.leases.create(p.namespace, p.body, this.opts(o));
  }
  replaceNamespacedLease(p: InNamespace & { body: V1Lease }, o?: RequestOptions): Promise<V1Lease> {
    return this.leases.replace(p.namespace, p.name, p.body, undefined, this.opts(o));
  }
  deleteNamespacedLease(
    p: InNamespace & { body?: V1DeleteOptions },
    o?: RequestOptions,
  ): Promise<unknown> {
    return this.leases.delete(p.namespace, p.name, p.body, this.opts(o));
  }
}

/** A custom resource's coordinates. */
interface Custom {
  group: string;
  version: string;
  plural: string;
}

/** Custom resources (EdgeDevices). Objects are `object`, as in client-node. */
export class CustomObjectsApi {
  private readonly http: KubeHttp;

  constructor(http: KubeHttp) {
    this.http = http;
  }

  private resource(c: Custom): Resource<object> {
    return new Resource(this.http, `/apis/${c.group}/${c.version}`, c.plural);
  }

  getNamespacedCustomObject(p: Custom & InNamespace, o?: RequestOptions): Promise<object> {
    return this.resource(p).get(p.namespace, p.name, o);
  }
  listNamespacedCustomObject(p: Custom & Listing, o?: RequestOptions): Promise<object> {
    const { namespace, group: _g, version: _v, plural: _p, ...q } = p;
    return this.resource(p).list(namespace, q, o) as Promise<object>;
  }
  listClusterCustomObject(p: Custom & ListParams, o?: RequestOptions): Promise<object> {
    const { group: _g, version: _v, plural: _p, ...q } = p;
    return this.resource(p).list(undefined, q, o) as Promise<object>;
  }
  replaceNamespacedCustomObject(
    p: Custom & InNamespace & { body: object },
    o?: RequestOptions,
  ): Promise<object> {
    return this.resource(p).replace(p.namespace, p.name, p.body, undefined, o);
  }
  replaceNamespacedCustomObjectStatus(
    p: Custom & InNamespace & { body: object },
    o?: RequestOptions,
  ): Promise<object> {
    return this.resource(p).replace(p.namespace, p.name, p.body, "status", o);
  }
}

/** certificates.k8s.io/v1 CertificateSigningRequests. */
export class CertificatesApi {
  private readonly csrs: Resource<V1CertificateSigningRequest>;

  constructor(http: KubeHttp) {
    this.csrs = new Resource(http, "/apis/certificates.k8s.io/v1", "certificatesigningrequests");
  }

  createCertificateSigningRequest(
    p: { body: V1CertificateSigningRequest },
    o?: RequestOptions,
  ): Promise<V1CertificateSigningRequest> {
    return this.csrs.create(undefined, p.body, o);
  }
  readCertificateSigningRequest(
    p: Named,
    o?: RequestOptions,
  ): Promise<V1CertificateSigningRequest> {
    return this.csrs.get(undefined, p.name, o);
  }
  replaceCertificateSigningRequestApproval(
    p: Named & { body: V1CertificateSigningRequest },
    o?: RequestOptions,
  ): Promise<V1CertificateSigningRequest> {
    return this.csrs.replace(undefined, p.name, p.body, "approval", o);
  }
  deleteCertificateSigningRequest(p: Named, o?: RequestOptions): Promise<unknown> {
    return this.csrs.delete(undefined, p.name, undefined, o);
  }
}

/** authentication.k8s.io/v1 reviews. */
export class AuthenticationApi {
  private readonly http: KubeHttp;

  constructor(http: KubeHttp) {
    this.http = http;
  }

  createTokenReview(p: { body: V1TokenReview }, o?: RequestOptions): Promise<V1TokenReview> {
    return this.http.request({
      method: "POST",
      path: "/apis/authentication.k8s.io/v1/tokenreviews",
      body: p.body,
      ...o,
    });
  }
  createSelfSubjectReview(
    p: { body: V1SelfSubjectReview },
    o?: RequestOptions,
  ): Promise<V1SelfSubjectReview> {
    return this.http.request({
      method: "POST",
      path: "/apis/authentication.k8s.io/v1/selfsubjectreviews",
      body: p.body,
      ...o,
    });
  }
}

/** authorization.k8s.io/v1 reviews. */
export class AuthorizationApi {
  private readonly http: KubeHttp;

  constructor(http: KubeHttp) {
    this.http = http;
  }

  createSubjectAccessReview(
    p: { body: V1SubjectAccessReview },
    o?: RequestOptions,
  ): Promise<V1SubjectAccessReview> {
    return this.http.request({
      method: "POST",
      path: "/apis/authorization.k8s.io/v1/subjectaccessreviews",
      body: p.body,
      ...o,
    });
  }
}

/**
 * A MicroTime as the API server parses it (RFC 3339 with exactly six fractional digits) for
 * `ms` since the epoch. Typed as client-node's V1MicroTime, whose JSON this is: aranya's objects
 * are JSON, and timestamps in them stay strings.
 */
export function microTime(ms: number): V1MicroTime {
  const iso = new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
  return iso as unknown as V1MicroTime;
}
