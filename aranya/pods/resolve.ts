/**
 * Turns a Kubernetes Pod bound to an edge node into the device's PodEnsureCmd,
 * resolving on the aranya side everything a kubelet would resolve locally
 * (the device has no API access of its own):
 *
 * - env: plain values with `$(VAR)` expansion, `secretKeyRef`,
 *   `configMapKeyRef`, `fieldRef`, `resourceFieldRef`; `envFrom` (with
 *   prefixes), then `env` on top, as the kubelet orders them;
 * - volumes: secret, configMap, downwardAPI and projected become files;
 *   emptyDir and hostPath pass through; the projected `kube-api-access-*`
 *   volume gets a bound service-account token (TokenRequest), the cluster CA
 *   and the namespace, and a failed TokenRequest never fails the pod (the
 *   token file is left out and a warning reported);
 * - imagePullSecrets become per-image registry credentials;
 * - securityContext, resources limits, ports, DNS and host aliases.
 *
 * Missing objects that are not `optional` fail with a `PodConfigError` that
 * names the field (kubelet's CreateContainerConfigError). Pure apart from the
 * `PodSources` it is given.
 */
import { create } from "@bufbuild/protobuf";
import type {
  V1ConfigMap,
  V1Container,
  V1DownwardAPIVolumeFile,
  V1ExecAction,
  V1GRPCAction,
  V1HTTPGetAction,
  V1KeyToPath,
  V1LifecycleHandler,
  V1ObjectFieldSelector,
  V1Pod,
  V1PodSpec,
  V1Probe,
  V1ResourceFieldSelector,
  V1Secret,
  V1Service,
  V1SleepAction,
  V1TCPSocketAction,
  V1Volume,
} from "@kubernetes/client-node";
import { sha256Hex } from "@aranya/common/digest";
import { InvalidInputError } from "@aranya/common/errors";
import { stableJson } from "@aranya/common/stable_json";
import {
  type ContainerSpec,
  ContainerSpecSchema,
  type ImagePullAuth,
  ImagePullAuthSchema,
  ImagePullSpecSchema,
  LifecycleHandlerSchema,
  type PodEnsureCmd,
  PodEnsureCmdSchema,
  ProbeSchema,
  PullPolicy,
  RestartPolicy,
  type Volume,
  type VolumeFile,
  VolumeFileSchema,
  VolumeSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import { parseQuantity } from "./quantity.ts";
import { serviceEnv } from "./service_env.ts";
import { decodeBase64 } from "@aranya/common/base64";

/** A pod cannot be started because something it references is missing or invalid. */
export class PodConfigError extends InvalidInputError {
  override readonly name = "PodConfigError";
}

/** Where the resolver reads the objects a pod references. */
export interface PodSources {
  /** The Secret, or undefined when it does not exist; throws on other API errors. */
  secret(namespace: string, name: string): Promise<V1Secret | undefined>;
  /** The ConfigMap, or undefined when it does not exist; throws on other API errors. */
  configMap(namespace: string, name: string): Promise<V1ConfigMap | undefined>;
  /**
   * The Services of `namespace` (for the kubelet's service environment
   * variables); absent: no such variables. Throws on API errors.
   */
  services?(namespace: string): Promise<V1Service[]>;
  /** A token for the service account bound to the pod (TokenRequest); throws on failure. */
  serviceAccountToken(req: {
    namespace: string;
    serviceAccount: string;
    audiences: string[];
    expirationSeconds: number;
    pod: { name: string; uid: string };
  }): Promise<string>;
}

/** What resolution needs besides the pod. */
export interface ResolveContext {
  sources: PodSources;
  /** The node's address (status.hostIP, and podIP for hostNetwork pods). */
  hostIP: string;
  /** Node allocatable, used for resourceFieldRef when a container sets no limit. */
  allocatable?: { cpu?: string; memory?: string; "ephemeral-storage"?: string };
  /** Problems that do not stop the pod (missing pull secret, failed token request). */
  warn?: (message: string) => void;
  /**
   * The EdgeDevice's spec.pod.dns: what dnsPolicy ClusterFirst means on this
   * device (absent: the device's own resolvers, as dnsPolicy Default).
   */
  dns?: { servers?: string[]; searches?: string[]; options?: string[] };
}

/**
 * The pod's name servers, search domains and options, as the kubelet derives
 * them: dnsPolicy None uses dnsConfig alone; ClusterFirst (the default, and
 * ClusterFirstWithHostNet with hostNetwork) starts from the device's cluster
 * DNS (the EdgeDevice's spec.pod.dns; without it, like Default); Default and
 * hostNetwork with ClusterFirst start from the device's own resolvers (nothing
 * sent: the device keeps its file). dnsConfig is appended, duplicates dropped;
 * options with the same name take dnsConfig's value.
 */
export function podDns(
  spec: Pick<V1PodSpec, "dnsPolicy" | "dnsConfig" | "hostNetwork">,
  device: ResolveContext["dns"],
): { servers: string[]; searches: string[]; options: string[] } {
  const policy = spec.dnsPolicy ?? "ClusterFirst";
  const cluster = policy === "ClusterFirstWithHostNet" ||
    (policy === "ClusterFirst" && !spec.hostNetwork);
  const base = cluster && device ? device : {};
  const uniq = (xs: string[]) => [...new Set(xs.filter((x) => x !== ""))];
  const cfg = spec.dnsConfig;
  const options = new Map<string, string>();
  for (const o of base.options ?? []) options.set(o.split(":")[0]!, o);
  for (const o of cfg?.options ?? []) {
    if (o.name) options.set(o.name, o.value === undefined ? o.name : `${o.name}:${o.value}`);
  }
  return {
    servers: uniq([...(base.servers ?? []), ...(cfg?.nameservers ?? [])]),
    searches: uniq([...(base.searches ?? []), ...(cfg?.searches ?? [])]),
    options: [...options.values()],
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const b64 = (s: string) => decodeBase64(s, "A Secret or ConfigMap value");

/** A stable hash of the parts of the pod spec whose change means delete + create. */
export function podSpecHash(pod: V1Pod): string {
  const s = pod.spec ?? { containers: [] };
  const relevant = {
    c: s.containers,
    i: s.initContainers ?? [],
    v: s.volumes ?? [],
    r: s.restartPolicy,
    h: [s.hostNetwork, s.hostPID, s.hostIPC, s.hostname, s.subdomain],
    d: [s.dnsPolicy, s.dnsConfig, s.hostAliases],
    p: s.imagePullSecrets ?? [],
    sc: s.securityContext ?? {},
    sa: s.serviceAccountName,
  };
  return sha256Hex(stableJson(relevant)).slice(0, 24);
}

/** Resolves `pod` into the command that runs it on the device. */
export async function resolvePod(pod: V1Pod, ctx: ResolveContext): Promise<PodEnsureCmd> {
  const r = new Resolver(pod, ctx);
  return await r.resolve();
}

const RESTART: Record<string, RestartPolicy> = {
  Always: RestartPolicy.ALWAYS,
  OnFailure: RestartPolicy.ON_FAILURE,
  Never: RestartPolicy.NEVER,
};
const PULL: Record<string, PullPolicy> = {
  IfNotPresent: PullPolicy.IF_NOT_PRESENT,
  Always: PullPolicy.ALWAYS,
  Never: PullPolicy.NEVER,
};

class Resolver {
  readonly #pod: V1Pod;
  readonly #ctx: ResolveContext;
  readonly #ns: string;
  readonly #secrets = new Map<string, Promise<V1Secret | undefined>>();
  readonly #configMaps = new Map<string, Promise<V1ConfigMap | undefined>>();

  constructor(pod: V1Pod, ctx: ResolveContext) {
    this.#pod = pod;
    this.#ctx = ctx;
    this.#ns = pod.metadata?.namespace ?? "default";
  }

  #secret(name: string): Promise<V1Secret | undefined> {
    let p = this.#secrets.get(name);
    if (!p) this.#secrets.set(name, p = this.#ctx.sources.secret(this.#ns, name));
    return p;
  }

  #configMap(name: string): Promise<V1ConfigMap | undefined> {
    let p = this.#configMaps.get(name);
    if (!p) this.#configMaps.set(name, p = this.#ctx.sources.configMap(this.#ns, name));
    return p;
  }

  async resolve(): Promise<PodEnsureCmd> {
    const pod = this.#pod;
    const spec = pod.spec;
    if (!spec) throw new PodConfigError(`Pod "${this.#ns}/${pod.metadata?.name}" has no spec`);
    const psc = spec.securityContext ?? {};
    const containers: ContainerSpec[] = [];
    for (const [i, c] of spec.containers.entries()) {
      containers.push(await this.#container(c, `spec.containers[${i}]`, psc));
    }
    const initContainers: ContainerSpec[] = [];
    for (const [i, c] of (spec.initContainers ?? []).entries()) {
      initContainers.push(await this.#container(c, `spec.initContainers[${i}]`, psc));
    }
    const ephemeralContainers: ContainerSpec[] = [];
    const ephemeralTargets: Record<string, string> = {};
    for (const [i, c] of (spec.ephemeralContainers ?? []).entries()) {
      // An EphemeralContainer has a Container's fields (probes, ports and lifecycle are refused
      // by the API server).
      ephemeralContainers.push(
        await this.#container(c as V1Container, `spec.ephemeralContainers[${i}]`, psc),
      );
      if (c.targetContainerName) ephemeralTargets[c.name] = c.targetContainerName;
    }
    const volumes: Volume[] = [];
    for (const [i, v] of (spec.volumes ?? []).entries()) {
      volumes.push(await this.#volume(v, `spec.volumes[${i}]`));
    }
    const dns = podDns(spec, this.#ctx.dns);
    const hosts: Record<string, string> = {};
    for (const a of spec.hostAliases ?? []) {
      for (const h of a.hostnames ?? []) if (a.ip) hosts[h] = a.ip;
    }
    return create(PodEnsureCmdSchema, {
      uid: pod.metadata?.uid ?? "",
      namespace: this.#ns,
      name: pod.metadata?.name ?? "",
      restartPolicy: RESTART[spec.restartPolicy ?? "Always"] ?? RestartPolicy.ALWAYS,
      hostNetwork: spec.hostNetwork ?? false,
      hostPid: spec.hostPID ?? false,
      hostIpc: spec.hostIPC ?? false,
      hostname: podHostname(spec.hostname ?? pod.metadata?.name ?? ""),
      initContainers,
      containers,
      volumes,
      imagePull: await this.#imagePull([...initContainers, ...containers, ...ephemeralContainers]),
      dnsServers: dns.servers,
      dnsSearches: dns.searches,
      dnsOptions: dns.options,
      hosts,
      terminationGraceSeconds: BigInt(spec.terminationGracePeriodSeconds ?? 30),
      specHash: podSpecHash(pod),
      fsGroup: BigInt(psc.fsGroup ?? 0),
      hasFsGroup: psc.fsGroup !== undefined,
      sysctls: Object.fromEntries((psc.sysctls ?? []).map((x) => [x.name, x.value])),
      ephemeralContainers,
      ephemeralTargets,
    });
  }

  async #container(
    c: V1Container,
    path: string,
    psc: NonNullable<NonNullable<V1Pod["spec"]>["securityContext"]>,
  ): Promise<ContainerSpec> {
    const env = await this.#env(c, path);
    const sc = c.securityContext ?? {};
    const runAsUser = sc.runAsUser ?? psc.runAsUser;
    const runAsGroup = sc.runAsGroup ?? psc.runAsGroup;
    const limits = c.resources?.limits ?? {};
    const requests = c.resources?.requests ?? {};
    const quantity = (q: string | undefined, field: string, kind = "limits") => {
      if (q === undefined) return 0;
      try {
        return parseQuantity(q);
      } catch (err) {
        throw new PodConfigError(`${path}.resources.${kind}.${field}: ${(err as Error).message}`);
      }
    };
    return create(ContainerSpecSchema, {
      name: c.name,
      image: c.image ?? "",
      pullPolicy: PULL[c.imagePullPolicy ?? ""] ?? PullPolicy.IF_NOT_PRESENT,
      command: (c.command ?? []).map((s) => expand(s, env)),
      args: (c.args ?? []).map((s) => expand(s, env)),
      workingDir: c.workingDir ?? "",
      env,
      mounts: (c.volumeMounts ?? []).map((m, i) => ({
        volume: m.name,
        mountPath: m.mountPath,
        subPath: subPathOf(m, env, `${path}.volumeMounts[${i}]`),
        readOnly: m.readOnly ?? false,
      })),
      ports: (c.ports ?? []).map((p) => ({
        name: p.name ?? "",
        protocol: p.protocol ?? "TCP",
        containerPort: p.containerPort,
        hostPort: p.hostPort ?? 0,
        hostIp: p.hostIP ?? "",
      })),
      stdin: c.stdin ?? false,
      stdinOnce: c.stdinOnce ?? false,
      tty: c.tty ?? false,
      privileged: sc.privileged ?? false,
      runAsUser: BigInt(runAsUser ?? 0),
      hasRunAsUser: runAsUser !== undefined,
      runAsGroup: BigInt(runAsGroup ?? 0),
      hasRunAsGroup: runAsGroup !== undefined,
      readOnlyRootFs: sc.readOnlyRootFilesystem ?? false,
      capsAdd: sc.capabilities?.add ?? [],
      capsDrop: sc.capabilities?.drop ?? [],
      memoryLimitBytes: BigInt(Math.ceil(quantity(limits.memory, "memory"))),
      cpuLimitMillis: BigInt(Math.ceil(quantity(limits.cpu, "cpu") * 1000)),
      memoryRequestBytes: BigInt(Math.ceil(quantity(requests.memory, "memory", "requests"))),
      cpuRequestMillis: BigInt(Math.ceil(quantity(requests.cpu, "cpu", "requests") * 1000)),
      supplementalGroups: (psc.supplementalGroups ?? []).map((g) => BigInt(g)),
      noNewPrivileges: sc.allowPrivilegeEscalation === false,
      runAsNonRoot: sc.runAsNonRoot ?? psc.runAsNonRoot ?? false,
      securityOpts: securityOpts(sc, psc, `${path}.securityContext`),
      livenessProbe: probe(c, c.livenessProbe, `${path}.livenessProbe`),
      readinessProbe: probe(c, c.readinessProbe, `${path}.readinessProbe`),
      startupProbe: probe(c, c.startupProbe, `${path}.startupProbe`),
      postStart: hook(c, c.lifecycle?.postStart, `${path}.lifecycle.postStart`),
      preStop: hook(c, c.lifecycle?.preStop, `${path}.lifecycle.preStop`),
      terminationMessagePath: c.terminationMessagePath ?? "",
      terminationMessageFallbackToLogs: c.terminationMessagePolicy === "FallbackToLogsOnError",
      // Known only on the device once the pod's network exists (hostNetwork: the node's, here).
      podIpEnv: this.#pod.spec?.hostNetwork ? [] : (c.env ?? []).filter((e) => {
        const f = e.valueFrom?.fieldRef?.fieldPath;
        return f === "status.podIP" || f === "status.podIPs";
      }).map((e) => e.name),
    });
  }

  /** envFrom (in order), then env (in order, with $(VAR) expansion), as the kubelet does. */
  #services?: Promise<Record<string, string>>;

  /** The kubelet's service variables (once per pod), below everything the container sets. */
  #serviceEnv(): Promise<Record<string, string>> {
    const list = this.#ctx.sources.services;
    if (!list) return Promise.resolve({});
    // A list aranya may not read (e.g. "default" when it serves only some namespaces) costs
    // the pod those variables, never the pod itself.
    const read = (ns: string) =>
      list(ns).catch((err) => {
        this.#ctx.warn?.(
          `service environment variables of namespace "${ns}" left out: ${(err as Error).message}`,
        );
        return [];
      });
    this.#services ??= (async () => {
      const [own, def] = await Promise.all([
        read(this.#ns),
        this.#ns === "default" ? Promise.resolve([]) : read("default"),
      ]);
      return serviceEnv(this.#ns, this.#pod.spec?.enableServiceLinks ?? true, [...own, ...def]);
    })();
    return this.#services;
  }

  async #env(c: V1Container, path: string): Promise<Record<string, string>> {
    const env: Record<string, string> = { ...await this.#serviceEnv() };
    for (const [i, from] of (c.envFrom ?? []).entries()) {
      const where = `${path}.envFrom[${i}]`;
      const prefix = from.prefix ?? "";
      if (from.configMapRef) {
        const ref = from.configMapRef;
        const cm = await this.#configMap(ref.name ?? "");
        if (!cm) {
          if (ref.optional) continue;
          throw new PodConfigError(
            `${where}.configMapRef: ConfigMap "${this.#ns}/${ref.name}" not found`,
          );
        }
        for (const [k, v] of Object.entries(cm.data ?? {})) {
          if (isEnvName(prefix + k)) env[prefix + k] = v;
          else this.#ctx.warn?.(`${where}: key "${k}" is not a valid environment variable name`);
        }
      } else if (from.secretRef) {
        const ref = from.secretRef;
        const s = await this.#secret(ref.name ?? "");
        if (!s) {
          if (ref.optional) continue;
          throw new PodConfigError(
            `${where}.secretRef: Secret "${this.#ns}/${ref.name}" not found`,
          );
        }
        for (const [k, v] of Object.entries(s.data ?? {})) {
          if (isEnvName(prefix + k)) env[prefix + k] = dec.decode(b64(v));
          else this.#ctx.warn?.(`${where}: key "${k}" is not a valid environment variable name`);
        }
      }
    }
    for (const [i, e] of (c.env ?? []).entries()) {
      const where = `${path}.env[${i}]`;
      const vf = e.valueFrom;
      if (!vf) {
        env[e.name] = expand(e.value ?? "", env);
        continue;
      }
      if (vf.secretKeyRef) {
        const ref = vf.secretKeyRef;
        const s = await this.#secret(ref.name ?? "");
        const v = s?.data?.[ref.key];
        if (v === undefined) {
          if (ref.optional) continue;
          throw new PodConfigError(
            s
              ? `${where}.valueFrom.secretKeyRef: key "${ref.key}" not found in Secret "${this.#ns}/${ref.name}"`
              : `${where}.valueFrom.secretKeyRef: Secret "${this.#ns}/${ref.name}" not found`,
          );
        }
        env[e.name] = dec.decode(b64(v));
      } else if (vf.configMapKeyRef) {
        const ref = vf.configMapKeyRef;
        const cm = await this.#configMap(ref.name ?? "");
        const v = cm?.data?.[ref.key];
        if (v === undefined) {
          if (ref.optional) continue;
          throw new PodConfigError(
            cm
              ? `${where}.valueFrom.configMapKeyRef: key "${ref.key}" not found in ConfigMap "${this.#ns}/${ref.name}"`
              : `${where}.valueFrom.configMapKeyRef: ConfigMap "${this.#ns}/${ref.name}" not found`,
          );
        }
        env[e.name] = v;
      } else if (vf.fieldRef) {
        env[e.name] = this.#field(vf.fieldRef, `${where}.valueFrom.fieldRef`);
      } else if (vf.resourceFieldRef) {
        env[e.name] = this.#resource(vf.resourceFieldRef, c, `${where}.valueFrom.resourceFieldRef`);
      } else {
        throw new PodConfigError(`${where}.valueFrom: no supported source`);
      }
    }
    return env;
  }

  /** A downward API field (the kubelet's set). */
  #field(ref: V1ObjectFieldSelector, where: string): string {
    const pod = this.#pod;
    const md = pod.metadata ?? {};
    const path = ref.fieldPath;
    const keyed = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
    if (keyed) {
      const map = keyed[1] === "labels" ? md.labels : md.annotations;
      return map?.[keyed[2]!] ?? "";
    }
    const podIP = pod.spec?.hostNetwork ? this.#ctx.hostIP : pod.status?.podIP ?? "";
    switch (path) {
      case "metadata.name":
        return md.name ?? "";
      case "metadata.namespace":
        return this.#ns;
      case "metadata.uid":
        return md.uid ?? "";
      case "metadata.labels":
        return formatMap(md.labels);
      case "metadata.annotations":
        return formatMap(md.annotations);
      case "spec.nodeName":
        return pod.spec?.nodeName ?? "";
      case "spec.serviceAccountName":
        return pod.spec?.serviceAccountName ?? "";
      case "status.hostIP":
      case "status.hostIPs":
        return this.#ctx.hostIP;
      case "status.podIP":
      case "status.podIPs":
        return podIP;
      default:
        throw new PodConfigError(`${where}.fieldPath: "${path}" is not supported`);
    }
  }

  /** A container resource (limits default to node allocatable, like the kubelet). */
  #resource(ref: V1ResourceFieldSelector, c: V1Container, where: string): string {
    const [kind, res] = ref.resource.split(".") as [string, string | undefined];
    if ((kind !== "limits" && kind !== "requests") || !res) {
      throw new PodConfigError(`${where}.resource: "${ref.resource}" is not supported`);
    }
    const q = c.resources?.[kind]?.[res] ??
      (kind === "limits"
        ? this.#ctx.allocatable?.[res as "cpu" | "memory" | "ephemeral-storage"]
        : undefined) ??
      "0";
    let divisor = 1;
    try {
      divisor = ref.divisor ? parseQuantity(String(ref.divisor)) : 1;
      // A zero divisor is the API's default: 1 (as the kubelet reads it).
      if (divisor === 0) divisor = 1;
    } catch (err) {
      throw new PodConfigError(`${where}.divisor: ${(err as Error).message}`);
    }
    if (divisor <= 0) throw new PodConfigError(`${where}.divisor: must be positive`);
    // The kubelet rounds up (e.g. cpu 250m with divisor 1 gives "1").
    return String(Math.ceil(parseQuantity(q) / divisor));
  }

  async #volume(v: V1Volume, where: string): Promise<Volume> {
    const mode = (m: number | undefined, d: number | undefined) => m ?? d ?? 0o644;
    if (v.emptyDir?.medium === "Memory") {
      let size = 0;
      try {
        size = v.emptyDir.sizeLimit ? parseQuantity(String(v.emptyDir.sizeLimit)) : 0;
      } catch (err) {
        throw new PodConfigError(`${where}.emptyDir.sizeLimit: ${(err as Error).message}`);
      }
      return create(VolumeSchema, {
        name: v.name,
        source: { case: "memoryDir", value: { sizeLimitBytes: BigInt(Math.ceil(size)) } },
      });
    }
    if (v.emptyDir) {
      return create(VolumeSchema, { name: v.name, source: { case: "emptyDir", value: true } });
    }
    if (v.hostPath) {
      return create(VolumeSchema, {
        name: v.name,
        source: { case: "hostPath", value: v.hostPath.path },
        hostPathType: v.hostPath.type ?? "",
      });
    }
    const files: VolumeFile[] = [];
    const add = (path: string, data: Uint8Array, m: number) =>
      files.push(create(VolumeFileSchema, { path, data, mode: m }));
    if (v.secret) {
      const s = await this.#secret(v.secret.secretName ?? "");
      if (!s) {
        if (!v.secret.optional) {
          throw new PodConfigError(
            `${where}.secret: Secret "${this.#ns}/${v.secret.secretName}" not found`,
          );
        }
      } else {
        this.#keyed(
          s.data ?? {},
          v.secret.items,
          b64,
          (p, d, m) => add(p, d, mode(m, v.secret!.defaultMode)),
          `${where}.secret`,
          v.secret.optional,
        );
      }
    } else if (v.configMap) {
      const cm = await this.#configMap(v.configMap.name ?? "");
      if (!cm) {
        if (!v.configMap.optional) {
          throw new PodConfigError(
            `${where}.configMap: ConfigMap "${this.#ns}/${v.configMap.name}" not found`,
          );
        }
      } else {
        this.#configMapFiles(
          cm,
          v.configMap.items,
          (p, d, m) => add(p, d, mode(m, v.configMap!.defaultMode)),
          `${where}.configMap`,
          v.configMap.optional,
        );
      }
    } else if (v.downwardAPI) {
      for (const [i, item] of (v.downwardAPI.items ?? []).entries()) {
        add(
          item.path,
          enc.encode(this.#downward(item, `${where}.downwardAPI.items[${i}]`)),
          mode(item.mode, v.downwardAPI.defaultMode),
        );
      }
    } else if (v.projected) {
      const dm = v.projected.defaultMode;
      for (const [i, src] of (v.projected.sources ?? []).entries()) {
        const at = `${where}.projected.sources[${i}]`;
        if (src.secret) {
          const s = await this.#secret(src.secret.name ?? "");
          if (!s) {
            if (src.secret.optional) continue;
            throw new PodConfigError(
              `${at}.secret: Secret "${this.#ns}/${src.secret.name}" not found`,
            );
          }
          this.#keyed(
            s.data ?? {},
            src.secret.items,
            b64,
            (p, d, m) => add(p, d, mode(m, dm)),
            `${at}.secret`,
            src.secret.optional,
          );
        } else if (src.configMap) {
          const cm = await this.#configMap(src.configMap.name ?? "");
          if (!cm) {
            if (src.configMap.optional) continue;
            throw new PodConfigError(
              `${at}.configMap: ConfigMap "${this.#ns}/${src.configMap.name}" not found`,
            );
          }
          this.#configMapFiles(
            cm,
            src.configMap.items,
            (p, d, m) => add(p, d, mode(m, dm)),
            `${at}.configMap`,
            src.configMap.optional,
          );
        } else if (src.downwardAPI) {
          for (const [j, item] of (src.downwardAPI.items ?? []).entries()) {
            add(
              item.path,
              enc.encode(this.#downward(item, `${at}.downwardAPI.items[${j}]`)),
              mode(item.mode, dm),
            );
          }
        } else if (src.serviceAccountToken) {
          const t = src.serviceAccountToken;
          try {
            const token = await this.#ctx.sources.serviceAccountToken({
              namespace: this.#ns,
              serviceAccount: this.#pod.spec?.serviceAccountName ?? "default",
              audiences: t.audience ? [t.audience] : [],
              expirationSeconds: t.expirationSeconds ?? 3607,
              pod: { name: this.#pod.metadata?.name ?? "", uid: this.#pod.metadata?.uid ?? "" },
            });
            add(t.path, enc.encode(token), mode(undefined, dm));
          } catch (err) {
            // Like the DESIGN asks: never fail a pod over its API token.
            this.#ctx.warn?.(
              `${at}.serviceAccountToken: token request failed, "${t.path}" left out: ${
                (err as Error).message
              }`,
            );
          }
        } else {
          const kind = Object.keys(src).find((k) =>
            (src as unknown as Record<string, unknown>)[k]
          ) ??
            "unknown";
          throw new PodConfigError(
            `${at}: projected source "${kind}" is not supported on edge devices`,
          );
        }
      }
    } else {
      const kind = Object.keys(v).find((k) =>
        k !== "name" && (v as unknown as Record<string, unknown>)[k]
      ) ??
        "unknown";
      throw new PodConfigError(`${where}: volume type "${kind}" is not supported on edge devices`);
    }
    return create(VolumeSchema, { name: v.name, source: { case: "data", value: { files } } });
  }

  #configMapFiles(
    cm: V1ConfigMap,
    items: V1KeyToPath[] | undefined,
    add: (path: string, data: Uint8Array, mode?: number) => void,
    where: string,
    optional?: boolean,
  ): void {
    const all: Record<string, Uint8Array> = {};
    for (const [k, v] of Object.entries(cm.data ?? {})) all[k] = enc.encode(v);
    for (const [k, v] of Object.entries(cm.binaryData ?? {})) all[k] = b64(v);
    this.#keyed(all, items, (x) => x, add, where, optional);
  }

  /** Files of a keyed source: all keys, or the listed items (a missing item key fails unless optional). */
  #keyed<T>(
    data: Record<string, T>,
    items: V1KeyToPath[] | undefined,
    bytes: (v: T) => Uint8Array,
    add: (path: string, data: Uint8Array, mode?: number) => void,
    where: string,
    optional?: boolean,
  ): void {
    if (!items?.length) {
      for (const [k, v] of Object.entries(data)) add(k, bytes(v));
      return;
    }
    for (const [i, item] of items.entries()) {
      const v = data[item.key];
      if (v === undefined) {
        if (optional) continue;
        throw new PodConfigError(`${where}.items[${i}].key: key "${item.key}" not found`);
      }
      add(item.path, bytes(v), item.mode);
    }
  }

  #downward(item: V1DownwardAPIVolumeFile, where: string): string {
    if (item.fieldRef) return this.#field(item.fieldRef, `${where}.fieldRef`);
    if (item.resourceFieldRef) {
      const name = item.resourceFieldRef.containerName;
      const c = this.#pod.spec?.containers.find((x) => x.name === name);
      if (!c) {
        throw new PodConfigError(
          `${where}.resourceFieldRef.containerName: container "${name ?? ""}" not found`,
        );
      }
      return this.#resource(item.resourceFieldRef, c, `${where}.resourceFieldRef`);
    }
    throw new PodConfigError(`${where}: needs fieldRef or resourceFieldRef`);
  }

  /** Registry credentials from the pod's imagePullSecrets, for each image that matches. */
  async #imagePull(containers: ContainerSpec[]): Promise<PodEnsureCmd["imagePull"]> {
    const auths: ImagePullAuth[] = [];
    for (const ref of this.#pod.spec?.imagePullSecrets ?? []) {
      const s = await this.#secret(ref.name ?? "");
      if (!s) {
        // The kubelet pulls without it and reports; so do we.
        this.#ctx.warn?.(`imagePullSecrets: Secret "${this.#ns}/${ref.name}" not found`);
        continue;
      }
      auths.push(...dockerAuths(s, (m) => this.#ctx.warn?.(m)));
    }
    const out: PodEnsureCmd["imagePull"] = {};
    for (const c of containers) {
      const host = registryHost(c.image);
      out[c.image] = create(ImagePullSpecSchema, {
        policy: c.pullPolicy,
        auth: auths.filter((a) => a.server === host),
      });
    }
    return out;
  }
}

/**
 * Engine security options for the profiles a device can honour: the engine's
 * default (RuntimeDefault, or nothing said) or none at all (Unconfined).
 * SELinux options go to the engine as `label=` options, as the kubelet hands
 * them to its runtime: the engine applies them where SELinux is enabled and
 * leaves them without effect where it is not (the kubelet's documented
 * semantics). Fields a device cannot meet are refused, naming the field,
 * rather than run without them: a Localhost seccomp or AppArmor profile (no
 * profile files on the device) and an Unmasked /proc.
 */
function securityOpts(
  sc: NonNullable<V1Container["securityContext"]>,
  psc: NonNullable<V1PodSpec["securityContext"]>,
  where: string,
): string[] {
  const out: string[] = [];
  const seccomp = sc.seccompProfile ?? psc.seccompProfile;
  if (seccomp?.type === "Unconfined") out.push("seccomp=unconfined");
  else if (seccomp?.type === "Localhost") {
    throw new PodConfigError(
      `${where}.seccompProfile: type "Localhost" is not supported on edge devices (use RuntimeDefault or Unconfined)`,
    );
  }
  const apparmor = sc.appArmorProfile ?? psc.appArmorProfile;
  if (apparmor?.type === "Unconfined") out.push("apparmor=unconfined");
  else if (apparmor?.type === "Localhost") {
    throw new PodConfigError(
      `${where}.appArmorProfile: type "Localhost" is not supported on edge devices (use RuntimeDefault or Unconfined)`,
    );
  }
  const selinux = sc.seLinuxOptions ?? psc.seLinuxOptions;
  for (const key of ["user", "role", "type", "level"] as const) {
    const value = selinux?.[key];
    if (!value) continue;
    if (/[\s\p{Cc}]/u.test(value)) {
      throw new PodConfigError(
        `${where}.seLinuxOptions.${key}: "${value}" is not an SELinux ${key}`,
      );
    }
    out.push(`label=${key}:${value}`);
  }
  if (sc.procMount === "Unmasked") {
    throw new PodConfigError(`${where}.procMount: "Unmasked" is not supported on edge devices`);
  }
  return out;
}

/**
 * A mount's subPath, with subPathExpr expanded from the container's env as
 * the kubelet does it: every variable it names must have a value, and the
 * result must be a relative path that never steps out of the volume.
 */
function subPathOf(
  m: { subPath?: string; subPathExpr?: string },
  env: Record<string, string>,
  where: string,
): string {
  let sub = m.subPath ?? "";
  if (m.subPathExpr) {
    const missing = [...m.subPathExpr.matchAll(/\$\(([^)]*)\)/g)].map((x) => x[1]!)
      .filter((k) => !env[k]);
    if (missing.length) {
      throw new PodConfigError(
        `${where}.subPathExpr: missing value for ${missing.map((k) => `"${k}"`).join(", ")}`,
      );
    }
    sub = expand(m.subPathExpr, env);
  }
  if (sub.startsWith("/")) {
    throw new PodConfigError(`${where}.subPath: "${sub}" must not be an absolute path`);
  }
  if (sub.split("/").includes("..")) {
    throw new PodConfigError(`${where}.subPath: "${sub}" must not contain ".."`);
  }
  return sub;
}

/**
 * The pod's hostname as the kubelet derives it: at most 63 characters (a DNS
 * label), a truncated name losing any trailing '-' or '.'.
 */
export function podHostname(name: string): string {
  if (name.length <= 63) return name;
  return name.slice(0, 63).replace(/[-.]+$/, "");
}

/** A container port by number or by the name of one of the container's ports. */
function portOf(c: V1Container, port: number | string | undefined, where: string): number {
  if (typeof port === "number") return port;
  if (port !== undefined && /^[0-9]+$/.test(port)) return Number(port);
  const named = c.ports?.find((p) => p.name === port);
  if (!named) {
    throw new PodConfigError(
      `${where}.port: container "${c.name}" has no port named "${port ?? ""}"`,
    );
  }
  return named.containerPort;
}

type Handler = {
  exec?: V1ExecAction;
  httpGet?: V1HTTPGetAction;
  tcpSocket?: V1TCPSocketAction;
  grpc?: V1GRPCAction;
  sleep?: V1SleepAction;
};

/** A probe's or hook's action on the wire; named ports become numbers. */
function action(c: V1Container, h: Handler, where: string) {
  if (h.exec) {
    return { case: "exec" as const, value: { command: h.exec.command ?? [] } };
  }
  if (h.httpGet) {
    const g = h.httpGet;
    return {
      case: "httpGet" as const,
      value: {
        host: g.host ?? "",
        port: portOf(c, g.port as number | string, `${where}.httpGet`),
        path: g.path ?? "/",
        scheme: g.scheme ?? "HTTP",
        headers: (g.httpHeaders ?? []).map((x) => ({ name: x.name, value: x.value })),
      },
    };
  }
  if (h.tcpSocket) {
    return {
      case: "tcpSocket" as const,
      value: {
        host: h.tcpSocket.host ?? "",
        port: portOf(c, h.tcpSocket.port as number | string, `${where}.tcpSocket`),
      },
    };
  }
  if (h.grpc) {
    return {
      case: "grpc" as const,
      value: { port: h.grpc.port, service: h.grpc.service ?? "" },
    };
  }
  if (h.sleep) return { case: "sleepSeconds" as const, value: h.sleep.seconds };
  throw new PodConfigError(`${where}: needs exec, httpGet, tcpSocket, grpc or sleep`);
}

/** A probe with its action resolved (timing defaults are applied on the device). */
function probe(c: V1Container, p: V1Probe | undefined, where: string) {
  if (!p) return undefined;
  const a = action(c, p, where);
  if (a.case === "sleepSeconds") throw new PodConfigError(`${where}: sleep is not a probe`);
  return create(ProbeSchema, {
    action: a,
    initialDelaySeconds: p.initialDelaySeconds ?? 0,
    periodSeconds: p.periodSeconds ?? 0,
    timeoutSeconds: p.timeoutSeconds ?? 0,
    successThreshold: p.successThreshold ?? 0,
    failureThreshold: p.failureThreshold ?? 0,
    terminationGracePeriodSeconds: BigInt(p.terminationGracePeriodSeconds ?? 0),
    hasTerminationGracePeriodSeconds: p.terminationGracePeriodSeconds !== undefined,
  });
}

/** A postStart or preStop hook. */
function hook(c: V1Container, h: V1LifecycleHandler | undefined, where: string) {
  if (!h) return undefined;
  const a = action(c, h, where);
  if (a.case === "grpc") throw new PodConfigError(`${where}: grpc is not a lifecycle handler`);
  return create(LifecycleHandlerSchema, { action: a });
}

/** Registry credentials in a kubernetes.io/dockerconfigjson or dockercfg Secret. */
export function dockerAuths(s: V1Secret, warn: (m: string) => void): ImagePullAuth[] {
  const where = `Secret "${s.metadata?.namespace}/${s.metadata?.name}"`;
  let entries: Record<string, Record<string, string>> = {};
  try {
    if (s.data?.[".dockerconfigjson"]) {
      entries = JSON.parse(dec.decode(b64(s.data[".dockerconfigjson"]))).auths ?? {};
    } else if (s.data?.[".dockercfg"]) {
      entries = JSON.parse(dec.decode(b64(s.data[".dockercfg"])));
    } else {
      warn(`${where} has neither ".dockerconfigjson" nor ".dockercfg"`);
      return [];
    }
  } catch (err) {
    warn(`${where} holds invalid docker config JSON: ${(err as Error).message}`);
    return [];
  }
  return Object.entries(entries).map(([server, e]) => {
    let username = e.username ?? "";
    let password = e.password ?? "";
    if (e.auth && !username) {
      const raw = dec.decode(b64(e.auth));
      const i = raw.indexOf(":");
      username = raw.slice(0, i);
      password = raw.slice(i + 1);
    }
    return create(ImagePullAuthSchema, {
      server: normalizeRegistry(server),
      username,
      password,
      identityToken: e.identitytoken ?? "",
      registryToken: e.registrytoken ?? "",
    });
  });
}

/** "https://index.docker.io/v1/" -> "docker.io"; "registry:5000/x" -> "registry:5000". */
export function normalizeRegistry(server: string): string {
  const host = server.replace(/^[a-z]+:\/\//, "").split("/")[0]!;
  return host === "index.docker.io" || host === "registry-1.docker.io" ? "docker.io" : host;
}

/** The registry an image reference pulls from (docker.io for short names). */
export function registryHost(image: string): string {
  const first = image.split("/")[0]!;
  if (
    image.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")
  ) {
    return normalizeRegistry(first);
  }
  return "docker.io";
}

/** Kubernetes' env name rule. */
function isEnvName(s: string): boolean {
  // Kubernetes 1.34's rule (RelaxedEnvironmentVariableValidation, on by default): any
  // printable ASCII character but "=".
  return /^[\x20-\x3c\x3e-\x7e]+$/.test(s);
}

/** key="value" lines, sorted, as the downward API formats labels and annotations. */
function formatMap(m: Record<string, string> | undefined): string {
  return Object.keys(m ?? {}).sort().map((k) => `${k}=${JSON.stringify(m![k])}`).join("\n");
}

/**
 * Expands `$(VAR)` from `env` as the kubelet does: `$$` is a literal `$`,
 * unknown references stay as written.
 */
export function expand(s: string, env: Record<string, string>): string {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (ch !== "$" || i + 1 >= s.length) {
      out += ch;
      continue;
    }
    const next = s[i + 1];
    if (next === "$") {
      out += "$";
      i++;
    } else if (next === "(") {
      const end = s.indexOf(")", i + 2);
      if (end < 0) {
        out += s.slice(i);
        break;
      }
      const name = s.slice(i + 2, end);
      out += name in env ? env[name] : `$(${name})`;
      i = end;
    } else {
      out += ch;
    }
  }
  return out;
}
