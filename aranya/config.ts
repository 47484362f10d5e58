/**
 * aranya's configuration: a YAML file (`--config`, default
 * {@link DEFAULT_CONFIG_PATH}) with command-line flags on top.
 *
 * `parseAranyaConfig` checks every field, fills the defaults below and throws
 * one `ConfigError` (an `InvalidInputError`) listing every problem, each
 * prefixed with its field path (`membership.renewDeadline: …`) or, for a
 * flag, with the flag (`--http-listen: …`). Unknown fields are problems too, so
 * a typo never silently falls back to a default. String values may use
 * `${VAR}` and `${VAR:-default}` (`common/env_expand.ts`); numbers, booleans
 * and durations may too, written as strings. Paths in the file must be
 * absolute. Durations become milliseconds (`…Ms` fields).
 *
 * Flags (they override the file): `--kubeconfig <path>`, `--namespace <ns>`
 * (repeatable; replaces `namespaces`), `--membership[=<bool>]`,
 * `--identity <id>`, `--http-listen <host:port>`, `--log-level <level>`.
 *
 * The documented sample is `deploy/aranya/config.sample.yaml`.
 *
 * @module
 */
import type { ServingCertSource } from "./kubelet/serving_cert.ts";
import { parseArgs } from "node:util";
import {
  checkAbsolute,
  checkLabel,
  checkSubdomain,
  type ClientTlsFiles,
  DNS_SUBDOMAIN,
  readClientTls,
} from "@aranya/common/config_checks";
import {
  ConfigError,
  ConfigProblems,
  ConfigReader,
  parseConfigYaml,
  readConfigFile,
} from "@aranya/common/config_reader";
import { envLookup, type EnvSource, processEnv } from "@aranya/common/env_expand";
import { errorMessage } from "@aranya/common/errors";
import type { LogLevel } from "@aranya/common/log";
import { isIP, isIPv4, isIPv6 } from "node:net";

/** Where aranya looks for its config when `--config` is not given. */
export const DEFAULT_CONFIG_PATH = "/etc/aranya/config.yaml";

/** The file that names the pod's namespace when aranya runs in a cluster. */
export const SERVICE_ACCOUNT_NAMESPACE_FILE =
  "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** Defaults of optional fields. */
export const CONFIG_DEFAULTS = Object.freeze({
  logLevel: "info" as LogLevel,
  /** docs/scale.md: ~10 requests per new device, one Lease renewal per device per 10 s. */
  apiQps: 500,
  apiBurst: 1000,
  /** One Secret read per device that dials in (a fleet reconnecting after an outage). */
  authQps: 100,
  authBurst: 200,
  httpListen: "0.0.0.0:8080",
  membershipEnabled: true,
  /** Used when aranya does not run in a pod (no POD_NAMESPACE, no service account). */
  membershipNamespace: "aranya-system",
  membershipName: "aranya",
  leaseDuration: "15s",
  renewDeadline: "10s",
  retryPeriod: "2s",
  kubeletAddress: "127.0.0.1",
  kubeletPort: 10250,
  kubeletPortCount: 5000,
  kubeletListen: "0.0.0.0",
  kubeletStreamCreationTimeout: "30s",
  kubeletStreamIdleTimeout: "4h",
  nodeHeartbeat: "10s",
  nodeLeaseDuration: "40s",
  nodeStatusSync: "5m",
  podSyncInterval: "1m",
  websocketListen: "0.0.0.0:8443",
  websocketPath: "/v1/link",
  grpcListen: "0.0.0.0:8444",
  /** Below ingress-nginx's and most NATs' idle timeouts; see docs/link.md. */
  websocketKeepalive: "2m",
  /**
   * A PING over TLS costs five packets, about 430 bytes; every 4 min that is 155 KB/day (every 3
   * min, 206), below AWS NLB's 350 s idle timeout and the common 5-minute NATs.
   */
  grpcKeepalive: "4m",
  /**
   * aranya's own MQTT broker connection, usually inside the cluster (no NAT): under kube-proxy
   * IPVS's 900 s idle timeout and AWS NLB's 350 s (a broker outside the cluster), far under the
   * brokers' maxima (AWS IoT Core 1200 s); about 60 KB/day for the whole broker connection (30 s
   * cost 600). The link server's MQTT_SERVER_DEFAULT_KEEPALIVE_SECONDS; see docs/link.md.
   */
  mqttKeepalive: "5m",
});

/** Config `kubelet`. */
export interface KubeletConfig {
  /** Advertised in each Node's status as its InternalIP (an IP the API server reaches). */
  address: string;
  /** Bind address of the node ports (default all IPv4 addresses). */
  listen: string;
  /** First port of the node port range (each node is served on its own port). */
  port: number;
  /** Ports in the range: the most nodes one aranya serves. */
  portCount: number;
  /** PEM file of the client CA; absent: ConfigMap kube-system/extension-apiserver-authentication. */
  clientCaFile?: string;
  streamCreationTimeoutMs: number;
  streamIdleTimeoutMs: number;
  /** The serving certificate (default: a CSR to kubernetes.io/kubelet-serving). */
  tls: ServingCertSource;
}

/** The log levels, lowest first. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

/** An address to listen on, from "host:port" (":port" and "0.0.0.0:port" mean all IPv4 addresses). */
export interface ListenAddress {
  /** Host name or IP address to bind, without brackets for IPv6 (`::`). */
  hostname: string;
  /** 0 picks a free port. */
  port: number;
}

/** TLS files of a listener (PEM). */
export interface ServerTlsFiles {
  certFile: string;
  keyFile: string;
  /** CA bundle that verifies device client certificates; unset: client certificates are not asked for. */
  clientCaFile?: string;
}

/** TLS files of a client connection (PEM). */
export type { ClientTlsFiles };

/** The WebSocket device listener. */
export interface WebSocketLinkConfig {
  listen: ListenAddress;
  /** Path of the link endpoint, starting with "/". */
  path: string;
  /** Keepalive interval, ms (per device: the EdgeDevice's timers.keepaliveInterval). */
  keepaliveMs: number;
  /** Unset: plain HTTP (only behind a TLS-terminating proxy). */
  tls?: ServerTlsFiles;
}

/** The gRPC device listener. */
export interface GrpcLinkConfig {
  listen: ListenAddress;
  /** HTTP/2 PING interval, ms (per device: the EdgeDevice's timers.keepaliveInterval). */
  keepaliveMs: number;
  /** Unset: plaintext HTTP/2 (only behind a TLS-terminating proxy). */
  tls?: ServerTlsFiles;
}

/** The MQTT broker aranya connects to for devices that use MQTT. */
export interface MqttLinkConfig {
  /** `mqtt://host:port` or `mqtts://host:port`. */
  broker: string;
  username?: string;
  /** A file holding the broker password (absolute path). */
  passwordFile?: string;
  tls?: ClientTlsFiles;
  /**
   * Manage per-device broker accounts and ACLs through mosquitto's dynamic
   * security plugin (default false).
   */
  dynamicSecurity: boolean;
  /**
   * MQTT keepalive of aranya's own broker connection (shared by all devices of
   * the broker), whole seconds, 1..65535 (config `keepalive`, a duration;
   * default 5m, see `mqttKeepalive` in CONFIG_DEFAULTS).
   */
  keepaliveSeconds: number;
}

/** aranya's validated config with every default filled in. */
export interface AranyaConfig {
  /** Kubeconfig file; unset: the KUBECONFIG variable, else the in-cluster service account. */
  kubeconfig?: string;
  /** Namespaces watched for EdgeDevices; empty: all namespaces. */
  namespaces: string[];
  logLevel: LogLevel;
  /** Client-side rate limit (token bucket) shared by all API requests. */
  /**
   * Client-side rate limits: `qps`/`burst` for aranya's own work (Leases,
   * Nodes, pods), `auth` for reads caused by callers (device credentials,
   * TokenReview/SubjectAccessReview of kubelet API callers): a flood of bad
   * credentials spends only the `auth` budget and never delays a Lease renewal.
   */
  api: { qps: number; burst: number; auth: { qps: number; burst: number } };
  /** Where /healthz, /readyz and /metrics are served. */
  http: { listen: ListenAddress };
  /**
   * The replicas (aranya/replicas/): each holds the Lease `<name>-<identity>`
   * in `namespace` while it lives; all of them serve devices.
   */
  membership: {
    /** False: this replica is the only one (no membership Lease). */
    enabled: boolean;
    /** Namespace of the membership Leases. */
    namespace: string;
    /** Prefix of the membership Leases' names (and their label's value). */
    name: string;
    /**
     * This replica's identity (default: hostname plus a random suffix); a DNS
     * subdomain, written as the holder of the node Leases of its devices.
     */
    identity: string;
    leaseDurationMs: number;
    renewDeadlineMs: number;
    retryPeriodMs: number;
  };
  /** The kubelet API aranya serves for every virtual Node (see aranya/kubelet/). */
  kubelet: KubeletConfig;
  /** Timers of the virtual Nodes. */
  node: { heartbeatMs: number; leaseDurationMs: number; statusSyncMs: number };
  /**
   * Pods on the devices: `syncIntervalMs`, how often a running pod's volume
   * sources (ConfigMaps, Secrets, downward API, tokens) are resolved again and
   * sent when they changed (the kubelet's syncFrequency, default 1 minute).
   */
  pods: { syncIntervalMs: number };
  /** Device links; at least one is set. */
  links: { websocket?: WebSocketLinkConfig; grpc?: GrpcLinkConfig; mqtt?: MqttLinkConfig };
}

/** Command-line flags; each set one overrides the file. */
export interface AranyaFlags {
  config?: string;
  kubeconfig?: string;
  /** `--namespace`, repeatable. */
  namespaces?: string[];
  /** `--membership`, as written ("true" or "false"). */
  membershipFlag?: string;
  identity?: string;
  httpListen?: string;
  logLevel?: string;
}

/** Options of {@link parseAranyaConfig}. */
export interface ParseAranyaConfigOptions {
  /** Where `${VAR}` references (and POD_NAMESPACE) are looked up (default: the process environment). */
  env?: EnvSource;
  /** Flags that override the file. */
  flags?: AranyaFlags;
  /** Names the config in the error message (default: "aranya config"). */
  source?: string;
  /** The host name used for the default identity (default: `Deno.hostname()`, else "aranya"). */
  hostname?: string;
  /**
   * The pod's namespace, the default of `membership.namespace` (default: the POD_NAMESPACE
   * variable, else {@link CONFIG_DEFAULTS}.membershipNamespace).
   */
  podNamespace?: string;
}

/** The flags, for `--help`. */
export const USAGE = `Usage: aranya [--config <file.yaml>] [flags]

  -c, --config <path>        config file (default ${DEFAULT_CONFIG_PATH})
      --kubeconfig <path>    kubeconfig file (default: KUBECONFIG, else in-cluster)
      --namespace <ns>       watch this namespace (repeatable; none: all namespaces)
      --membership[=bool]    share the devices with the other replicas through
                             membership Leases (default true; false: the only replica)
      --identity <id>        this replica's identity (default: hostname + suffix)
      --http-listen <h:p>    address of /healthz, /readyz, /metrics (default ${CONFIG_DEFAULTS.httpListen})
      --log-level <level>    debug | info | warn | error (default info)
`;

/**
 * Parses `argv` (without the program name) into flags.
 *
 * @throws ConfigError naming the flag when one is unknown, lacks its value or a positional
 *   argument is given.
 */
export function parseAranyaFlags(argv: readonly string[]): AranyaFlags {
  // A bare `--membership` means true; parseArgs wants string flags to have a value.
  const args = argv.map((a) => (a === "--membership" ? "--membership=true" : a));
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: "string", short: "c" },
        kubeconfig: { type: "string" },
        namespace: { type: "string", multiple: true },
        "membership": { type: "string" },
        identity: { type: "string" },
        "http-listen": { type: "string" },
        "log-level": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new ConfigError("aranya command line", [errorMessage(err)]);
  }
  const flags: AranyaFlags = {};
  const str = (k: string) => values[k] as string | undefined;
  if (str("config") !== undefined) flags.config = str("config");
  if (str("kubeconfig") !== undefined) flags.kubeconfig = str("kubeconfig");
  if (values.namespace !== undefined) flags.namespaces = values.namespace as string[];
  if (str("membership") !== undefined) flags.membershipFlag = str("membership");
  if (str("identity") !== undefined) flags.identity = str("identity");
  if (str("http-listen") !== undefined) flags.httpListen = str("http-listen");
  if (str("log-level") !== undefined) flags.logLevel = str("log-level");
  return flags;
}

/**
 * Reads the config file named by `--config` (default {@link DEFAULT_CONFIG_PATH}) and applies
 * the other flags of `argv` on top.
 *
 * @param env where `${VAR}` references and POD_NAMESPACE are looked up.
 * @throws NotFoundError when the file does not exist; ConfigError (an InvalidInputError) listing
 *   every problem of the flags and the file.
 */
export async function loadAranyaConfig(
  argv: readonly string[],
  env: EnvSource = processEnv,
): Promise<AranyaConfig> {
  const flags = parseAranyaFlags(argv);
  const path = flags.config ?? DEFAULT_CONFIG_PATH;
  const text = await readConfigFile(path);
  return parseAranyaConfig(text, {
    env,
    flags,
    source: `aranya config "${path}"`,
    hostname: hostnameOrDefault(),
    podNamespace: await podNamespace(env),
  });
}

/**
 * Validates config `text` (YAML) and applies `opts.flags`; see the module doc.
 *
 * @throws ConfigError (an InvalidInputError) listing every problem.
 */
export function parseAranyaConfig(
  text: string,
  opts: ParseAranyaConfigOptions = {},
): AranyaConfig {
  const env = opts.env ?? processEnv;
  const source = opts.source ?? "aranya config";
  const problems = new ConfigProblems(env);
  const js = parseConfigYaml(text, problems, source);
  const root = new ConfigReader(js, "", problems);
  const links = isMapping(js) ? js.links : undefined;
  const defaults: Defaults = {
    linksIsMapping: isMapping(links),
    hostname: opts.hostname ?? hostnameOrDefault(),
    podNamespace: opts.podNamespace ?? envNamespace(env) ?? CONFIG_DEFAULTS.membershipNamespace,
  };
  const config = readConfig(root, defaults);
  root.finish();
  const origin = applyFlags(config, opts.flags ?? {}, problems);
  checkListenConflicts(config, origin, problems);
  problems.throwIfAny(source);
  return config;
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** A default identity: `<hostname>-<6 random hex digits>`. */
export function defaultIdentity(hostname: string): string {
  const suffix = crypto.randomUUID().replaceAll("-", "").slice(0, 6);
  const host = hostname.toLowerCase().replace(/[^a-z0-9.-]/g, "-").replace(/^[^a-z0-9]+/, "")
    .slice(0, 56).replace(/[^a-z0-9]+$/, "");
  return `${host || "aranya"}-${suffix}`;
}

/**
 * A replica's identity names its membership Lease (`<name>-<identity>`) and is
 * written as the holder of its devices' node Leases: a DNS subdomain of at most 63 characters.
 */
function checkIdentity(v: string): string | undefined {
  if (v.length > 63) return "must be at most 63 characters";
  return checkSubdomain(v);
}

function hostnameOrDefault(): string {
  try {
    return Deno.hostname();
  } catch {
    return "aranya"; // no --allow-sys=hostname
  }
}

function envNamespace(env: EnvSource): string | undefined {
  try {
    const ns = envLookup(env)("POD_NAMESPACE");
    return ns ? ns : undefined;
  } catch {
    return undefined; // not allowed to read it
  }
}

/** POD_NAMESPACE, else the service account's namespace file, else undefined. */
async function podNamespace(env: EnvSource): Promise<string | undefined> {
  const fromEnv = envNamespace(env);
  if (fromEnv) return fromEnv;
  try {
    const ns = (await Deno.readTextFile(SERVICE_ACCOUNT_NAMESPACE_FILE)).trim();
    return ns === "" ? undefined : ns;
  } catch {
    return undefined; // not in a cluster (or not allowed to look)
  }
}

const checkLogLevel = (v: string) =>
  (LOG_LEVELS as readonly string[]).includes(v)
    ? undefined
    : `must be one of ${LOG_LEVELS.map((l) => JSON.stringify(l)).join(", ")}`;

const checkIp = (v: string) => isIP(v) !== 0 ? undefined : "must be an IPv4 or IPv6 address";

/**
 * A "host:port" listen address: `host` is an IPv4 address, a host name or a bracketed IPv6
 * address (`[::]:8080`), or empty for all IPv4 addresses (`:8080`); `port` is 0 to 65535.
 *
 * @returns undefined when `v` is not such an address.
 */
export function parseListenAddress(v: string): ListenAddress | undefined {
  const m = /^(?:\[([^\]]*)\]|([^\s:[\]/]*)):(\d{1,5})$/.exec(v);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  if (m[1] !== undefined) return isIPv6(m[1]) ? { hostname: m[1], port } : undefined;
  const host = m[2] ?? "";
  if (host === "") return { hostname: "0.0.0.0", port };
  if (/^[\d.]+$/.test(host)) return isIPv4(host) ? { hostname: host, port } : undefined;
  return DNS_SUBDOMAIN.test(host.toLowerCase()) ? { hostname: host, port } : undefined;
}

const LISTEN_WRONG =
  'must be "host:port" with an IP address, a host name or a bracketed IPv6 address, and a port from 0 to 65535';
const checkListen = (v: string) => (parseListenAddress(v) ? undefined : LISTEN_WRONG);

function readListen(r: ConfigReader, key: string, def: string): ListenAddress {
  return parseListenAddress(r.string(key, { default: def, check: checkListen }))!;
}

interface Defaults {
  hostname: string;
  podNamespace: string;
  /** `links` is a mapping (so "set at least one" is worth saying). */
  linksIsMapping: boolean;
}

function readConfig(root: ConfigReader, defaults: Defaults): AranyaConfig {
  const kubeconfig = root.string("kubeconfig", { check: checkAbsolute });
  const config: AranyaConfig = {
    namespaces: readNamespaces(root),
    logLevel: root.string("logLevel", {
      default: CONFIG_DEFAULTS.logLevel,
      oneOf: LOG_LEVELS,
    }) as LogLevel,
    api: readApi(root.object("api")),
    http: readHttp(root.object("http")),
    membership: readMembership(root.object("membership"), defaults),
    kubelet: readKubelet(root.object("kubelet")),
    node: readNode(root.object("node")),
    pods: readPods(root.object("pods")),
    links: readLinks(root.object("links", { required: true }), defaults.linksIsMapping),
  };
  if (kubeconfig !== undefined) config.kubeconfig = kubeconfig;
  return config;
}

function readNamespaces(root: ConfigReader): string[] {
  const list = root.strings("namespaces") ?? [];
  const out: string[] = [];
  list.forEach((ns, i) => {
    const wrong = checkLabel(ns);
    if (wrong !== undefined) {
      root.problems.add(
        `${root.pathOf("namespaces")}[${i}]`,
        `${wrong}; got ${JSON.stringify(ns)}`,
      );
    } else if (!out.includes(ns)) {
      out.push(ns);
    }
  });
  return out;
}

function readApi(r: ConfigReader): AranyaConfig["api"] {
  const authReader = r.object("auth");
  const api = {
    ...readRate(r, CONFIG_DEFAULTS.apiQps, CONFIG_DEFAULTS.apiBurst),
    auth: readRate(authReader, CONFIG_DEFAULTS.authQps, CONFIG_DEFAULTS.authBurst),
  };
  authReader.finish();
  r.finish();
  return api;
}

/** The `qps` and `burst` fields of a rate limit in `r` (the caller finishes `r`). */
function readRate(r: ConfigReader, qps: number, burst: number): { qps: number; burst: number } {
  return {
    qps: r.number("qps", { default: qps, min: 0.01, max: 100_000 }),
    burst: r.number("burst", { default: burst, integer: true, min: 1, max: 100_000 }),
  };
}

function readHttp(r: ConfigReader): AranyaConfig["http"] {
  const http = { listen: readListen(r, "listen", CONFIG_DEFAULTS.httpListen) };
  r.finish();
  return http;
}

/** A duration in whole seconds (Leases count seconds), at least 1 s. */
function readSeconds(r: ConfigReader, key: string, def: string): number {
  const ms = r.duration(key, { default: def, min: 1000 });
  if (ms % 1000 !== 0) {
    r.problems.add(r.pathOf(key), `must be whole seconds; got ${ms}ms`);
    return Math.ceil(ms / 1000) * 1000;
  }
  return ms;
}

function readMembership(r: ConfigReader, defaults: Defaults): AranyaConfig["membership"] {
  const identity = r.string("identity", {
    default: "",
    check: (v) => (v === "" ? undefined : checkIdentity(v)),
  });
  const enabled = r.boolean("enabled", { default: CONFIG_DEFAULTS.membershipEnabled });
  const namespace = r.string("namespace", { default: defaults.podNamespace, check: checkLabel });
  const name = r.string("name", {
    default: CONFIG_DEFAULTS.membershipName,
    check: checkSubdomain,
  });
  const before = r.problems.list.length;
  const leaseDurationMs = readSeconds(r, "leaseDuration", CONFIG_DEFAULTS.leaseDuration);
  const renewDeadlineMs = r.duration("renewDeadline", {
    default: CONFIG_DEFAULTS.renewDeadline,
    min: 1,
  });
  const retryPeriodMs = r.duration("retryPeriod", { default: CONFIG_DEFAULTS.retryPeriod, min: 1 });
  // After a bad timer (reported already), comparing defaults with the others would mislead.
  if (r.problems.list.length === before) {
    if (renewDeadlineMs >= leaseDurationMs) {
      r.problems.add(
        r.pathOf("renewDeadline"),
        `must be shorter than leaseDuration (${leaseDurationMs}ms); got ${renewDeadlineMs}ms`,
      );
    } else if (retryPeriodMs >= renewDeadlineMs) {
      r.problems.add(
        r.pathOf("retryPeriod"),
        `must be shorter than renewDeadline (${renewDeadlineMs}ms); got ${retryPeriodMs}ms`,
      );
    }
  }
  r.finish();
  return {
    enabled,
    namespace,
    name,
    identity: identity === "" ? defaultIdentity(defaults.hostname) : identity,
    leaseDurationMs,
    renewDeadlineMs,
    retryPeriodMs,
  };
}

function readKubelet(r: ConfigReader): AranyaConfig["kubelet"] {
  const address = r.string("address", { default: CONFIG_DEFAULTS.kubeletAddress, check: checkIp });
  const port = r.number("port", {
    default: CONFIG_DEFAULTS.kubeletPort,
    integer: true,
    min: 1,
    max: 65535,
  });
  const kubelet: KubeletConfig = {
    address,
    listen: r.string("listen", { default: CONFIG_DEFAULTS.kubeletListen, check: checkIp }),
    port,
    portCount: r.number("portCount", {
      default: Math.min(CONFIG_DEFAULTS.kubeletPortCount, 65536 - port),
      integer: true,
      min: 1,
      max: 65536 - port,
    }),
    streamCreationTimeoutMs: r.duration("streamCreationTimeout", {
      default: CONFIG_DEFAULTS.kubeletStreamCreationTimeout,
      min: 1000,
    }),
    streamIdleTimeoutMs: r.duration("streamIdleTimeout", {
      default: CONFIG_DEFAULTS.kubeletStreamIdleTimeout,
      min: 1000,
    }),
    tls: { kind: "csr" },
  };
  const ca = r.string("clientCaFile", { check: checkAbsolute });
  if (ca !== undefined) kubelet.clientCaFile = ca;
  if (r.has("tls")) kubelet.tls = readKubeletTls(r.object("tls"));
  r.finish();
  return kubelet;
}

/** `kubelet.tls`: exactly one of `csr`, `secret`, or `certFile` + `keyFile`. */
function readKubeletTls(r: ConfigReader): ServingCertSource {
  const kinds = ["csr", "secret", "certFile"].filter((k) => r.has(k));
  let tls: ServingCertSource = { kind: "csr" };
  if (kinds.length > 1) {
    r.problems.add(r.pathOf(kinds[1]!), `only one of "csr", "secret" and "certFile" may be set`);
    for (const k of kinds) r.ignore(k);
  }
  if (r.has("secret")) {
    const s = r.object("secret");
    tls = {
      kind: "secret",
      namespace: s.string("namespace", { required: true }) ?? "",
      name: s.string("name", { required: true }) ?? "",
    };
    s.finish();
  } else if (r.has("certFile") || r.has("keyFile")) {
    tls = {
      kind: "files",
      certFile: r.string("certFile", { required: true, check: checkAbsolute }) ?? "",
      keyFile: r.string("keyFile", { required: true, check: checkAbsolute }) ?? "",
    };
  } else if (r.has("csr")) {
    const c = r.object("csr");
    const csr: ServingCertSource & { kind: "csr" } = { kind: "csr" };
    const nodeName = c.string("nodeName");
    if (nodeName) csr.nodeName = nodeName;
    const dns = c.strings("dnsNames");
    if (dns) csr.dnsNames = dns;
    const ips = c.strings("extraIpAddresses");
    if (ips) csr.extraIpAddresses = ips;
    const exp = c.number("expirationSeconds", { integer: true, min: 600 });
    if (exp !== undefined) csr.expirationSeconds = exp;
    c.finish();
    tls = csr;
  }
  r.finish();
  return tls;
}

function readNode(r: ConfigReader): AranyaConfig["node"] {
  const before = r.problems.list.length;
  const node = {
    heartbeatMs: r.duration("heartbeat", { default: CONFIG_DEFAULTS.nodeHeartbeat, min: 100 }),
    leaseDurationMs: readSeconds(r, "leaseDuration", CONFIG_DEFAULTS.nodeLeaseDuration),
    statusSyncMs: r.duration("statusSync", { default: CONFIG_DEFAULTS.nodeStatusSync, min: 1000 }),
  };
  if (r.problems.list.length === before && node.heartbeatMs >= node.leaseDurationMs) {
    r.problems.add(
      r.pathOf("heartbeat"),
      `must be shorter than leaseDuration (${node.leaseDurationMs}ms); got ${node.heartbeatMs}ms`,
    );
  }
  r.finish();
  return node;
}

function readPods(r: ConfigReader): AranyaConfig["pods"] {
  const pods = {
    syncIntervalMs: r.duration("syncInterval", {
      default: CONFIG_DEFAULTS.podSyncInterval,
      min: 1000,
    }),
  };
  r.finish();
  return pods;
}

const LINKS = ["websocket", "grpc", "mqtt"] as const;

function readLinks(r: ConfigReader, isMapping: boolean): AranyaConfig["links"] {
  const links: AranyaConfig["links"] = {};
  if (r.has("websocket")) {
    const w = r.object("websocket");
    const ws: WebSocketLinkConfig = {
      listen: readListen(w, "listen", CONFIG_DEFAULTS.websocketListen),
      path: w.string("path", {
        default: CONFIG_DEFAULTS.websocketPath,
        check: (v) => /^\/[^\s?#]*$/.test(v) ? undefined : 'must be a URL path starting with "/"',
      }),
      keepaliveMs: w.duration("keepalive", {
        default: CONFIG_DEFAULTS.websocketKeepalive,
        min: 1000,
      }),
    };
    if (w.has("tls")) ws.tls = readServerTls(w.object("tls"));
    else w.ignore("tls");
    w.finish();
    links.websocket = ws;
  }
  if (r.has("grpc")) {
    const g = r.object("grpc");
    const grpc: GrpcLinkConfig = {
      listen: readListen(g, "listen", CONFIG_DEFAULTS.grpcListen),
      keepaliveMs: g.duration("keepalive", { default: CONFIG_DEFAULTS.grpcKeepalive, min: 1000 }),
    };
    if (g.has("tls")) grpc.tls = readServerTls(g.object("tls"));
    else g.ignore("tls");
    g.finish();
    links.grpc = grpc;
  }
  if (r.has("mqtt")) {
    const mqtt = readMqtt(r.object("mqtt"));
    if (mqtt) links.mqtt = mqtt;
  }
  for (const k of LINKS) r.ignore(k);
  if (isMapping && !LINKS.some((k) => r.has(k))) {
    r.problems.add(r.path, `must set at least one of ${LINKS.join(", ")}`);
  }
  r.finish();
  return links;
}

function readServerTls(r: ConfigReader): ServerTlsFiles {
  const tls: ServerTlsFiles = {
    certFile: r.string("certFile", { required: true, check: checkAbsolute }) ?? "",
    keyFile: r.string("keyFile", { required: true, check: checkAbsolute }) ?? "",
  };
  const ca = r.string("clientCaFile", { check: checkAbsolute });
  if (ca !== undefined) tls.clientCaFile = ca;
  r.finish();
  return tls;
}

function readMqtt(r: ConfigReader): MqttLinkConfig | undefined {
  const broker = r.string("broker", {
    required: true,
    check: (v) => {
      try {
        const url = new URL(v);
        if ((url.protocol === "mqtt:" || url.protocol === "mqtts:") && url.hostname !== "") {
          return undefined;
        }
      } catch { /* reported below */ }
      return "must be a mqtt:// or mqtts:// URL";
    },
  });
  const username = r.string("username", {
    check: (v) => (v === "" ? "must not be empty" : undefined),
  });
  const passwordFile = r.string("passwordFile", { check: checkAbsolute });
  if (r.has("passwordFile") && !r.has("username")) {
    r.problems.add(r.pathOf("username"), "is required when passwordFile is set");
  }
  const dynamicSecurity = r.boolean("dynamicSecurity", { default: false });
  // MQTT's keepalive is a 16-bit count of seconds.
  let keepaliveMs = readSeconds(r, "keepalive", CONFIG_DEFAULTS.mqttKeepalive);
  if (keepaliveMs > 65_535_000) {
    r.problems.add(
      r.pathOf("keepalive"),
      `must be at most 65535s (MQTT's limit); got ${keepaliveMs}ms`,
    );
    keepaliveMs = 65_535_000;
  }
  let tls: ClientTlsFiles | undefined;
  if (r.has("tls")) {
    tls = readClientTls(r.object("tls"));
    if (tls.certFile !== undefined && broker?.startsWith("mqtt:")) {
      r.problems.add(r.pathOf("tls"), "a client certificate needs an mqtts:// broker");
    }
  } else {
    r.ignore("tls");
  }
  r.finish();
  if (broker === undefined) return undefined;
  const mqtt: MqttLinkConfig = { broker, dynamicSecurity, keepaliveSeconds: keepaliveMs / 1000 };
  if (username !== undefined) mqtt.username = username;
  if (passwordFile !== undefined) mqtt.passwordFile = passwordFile;
  if (tls !== undefined) mqtt.tls = tls;
  return mqtt;
}

/** Where each listen address came from, for problems. */
interface ListenOrigin {
  http: string;
}

/** Applies `flags` over `config`, recording a problem per bad flag. */
function applyFlags(
  config: AranyaConfig,
  flags: AranyaFlags,
  problems: ConfigProblems,
): ListenOrigin {
  const origin: ListenOrigin = { http: "http.listen" };
  const bad = (flag: string, wrong: string, value: string) =>
    problems.add(flag, `${wrong}; got ${JSON.stringify(value)}`);
  if (flags.kubeconfig !== undefined) {
    if (flags.kubeconfig === "") problems.add("--kubeconfig", "must not be empty");
    else config.kubeconfig = flags.kubeconfig;
  }
  if (flags.namespaces !== undefined) {
    const out: string[] = [];
    for (const ns of flags.namespaces) {
      const wrong = checkLabel(ns);
      if (wrong !== undefined) bad("--namespace", wrong, ns);
      else if (!out.includes(ns)) out.push(ns);
    }
    config.namespaces = out;
  }
  if (flags.membershipFlag !== undefined) {
    if (flags.membershipFlag === "true" || flags.membershipFlag === "false") {
      config.membership.enabled = flags.membershipFlag === "true";
    } else {
      bad("--membership", "must be true or false", flags.membershipFlag);
    }
  }
  if (flags.identity !== undefined) {
    const wrong = checkIdentity(flags.identity);
    if (wrong !== undefined) {
      bad("--identity", wrong, flags.identity);
    } else {
      config.membership.identity = flags.identity;
    }
  }
  if (flags.httpListen !== undefined) {
    const listen = parseListenAddress(flags.httpListen);
    if (listen) {
      config.http.listen = listen;
      origin.http = "--http-listen";
    } else {
      bad("--http-listen", LISTEN_WRONG, flags.httpListen);
    }
  }
  if (flags.logLevel !== undefined) {
    const wrong = checkLogLevel(flags.logLevel);
    if (wrong === undefined) config.logLevel = flags.logLevel as LogLevel;
    else bad("--log-level", wrong, flags.logLevel);
  }
  return origin;
}

const ANY_HOST = new Set(["0.0.0.0", "::", ""]);

/** Records a problem when two listeners would bind the same port on overlapping addresses. */
function checkListenConflicts(
  config: AranyaConfig,
  origin: ListenOrigin,
  problems: ConfigProblems,
): void {
  const listeners: [string, ListenAddress][] = [[origin.http, config.http.listen]];
  if (config.links.websocket) {
    listeners.push(["links.websocket.listen", config.links.websocket.listen]);
  }
  if (config.links.grpc) listeners.push(["links.grpc.listen", config.links.grpc.listen]);
  listeners.forEach(([path, a], i) => {
    const clash = listeners.slice(0, i).find(([, b]) =>
      a.port !== 0 && a.port === b.port &&
      (a.hostname === b.hostname || ANY_HOST.has(a.hostname) || ANY_HOST.has(b.hostname))
    );
    if (clash) problems.add(path, `port ${a.port} is already used by ${clash[0]}`);
  });
}
