/**
 * arhat's config file: YAML, read once at start, validated as a whole.
 *
 * `parseConfig` checks every field, fills the defaults below and throws one
 * `ConfigError` (an `InvalidInputError`) listing every problem, each prefixed
 * with its field path (`connectivity.methods[1].method: must be one of …`).
 * Unknown fields are problems too, so a typo never silently falls back to a
 * default. String values may use `${VAR}` and `${VAR:-default}`
 * (`common/env_expand.ts`); numbers, booleans and durations may too, written
 * as strings. Paths must be absolute.
 *
 * The documented sample is `deploy/arhat/config.sample.yaml`.
 *
 * @module
 */
import {
  checkAbsolute,
  checkLabel,
  checkSubdomain,
  type ClientTlsFiles,
  readClientTls,
} from "@aranya/common/config_checks";
import {
  ConfigProblems,
  ConfigReader,
  parseConfigYaml,
  readConfigFile,
} from "@aranya/common/config_reader";
import { parseDuration } from "@aranya/common/duration";
import { type EnvSource, processEnv } from "@aranya/common/env_expand";
import type { LogLevel } from "@aranya/common/log";

/** Where arhat looks for its config when not told otherwise. */
export const DEFAULT_CONFIG_PATH = "/etc/arhat/config.yaml";

/** Defaults of optional fields. */
export const CONFIG_DEFAULTS = Object.freeze({
  stateDir: "/var/lib/arhat",
  logLevel: "info" as LogLevel,
  runtimeEndpoint: "/var/run/docker.sock",
  /** The Kubernetes pause image; devices without registry access must set a local image. */
  infraImage: "registry.k8s.io/pause:3.10",
  pullTimeoutSeconds: 300,
  memoryAvailablePercent: 5,
  diskAvailablePercent: 10,
  pidsAvailablePercent: 5,
  maxPods: 110,
  nodeStatusCheckInterval: "30s",
  /** The ceiling of node status pushes: unchanged status is sent again after this long. */
  nodeStatusMaxInterval: "1h",
  dialTimeout: "15s",
  backoffInitialDelay: "1s",
  backoffMaxDelay: "30s",
  backoffFactor: 1.5,
  mqttKeepaliveSeconds: 120,
});

/** The transports arhat can dial. */
export const CONNECTIVITY_METHODS = ["websocket", "mqtt", "grpc"] as const;
/** One of {@link CONNECTIVITY_METHODS}. */
export type ConnectivityMethodName = typeof CONNECTIVITY_METHODS[number];

/** TLS files of a transport (PEM): the CA that verifies aranya (or the broker), client certificate. */
export type TlsFiles = ClientTlsFiles;

/** Reconnect back-off, shaped like `common/backoff.ts` `BackoffOptions`. */
export interface BackoffConfig {
  initialMs: number;
  maxMs: number;
  factor: number;
}

interface MethodCommon {
  /** Lower is tried first (default: the method's index in the list). */
  priority: number;
  tls?: TlsFiles;
  /** The device token, inline. At most one of `token` and `tokenFile`. */
  token?: string;
  /** A file holding the device token (read at dial time, so it can be rotated). */
  tokenFile?: string;
  dialTimeoutMs: number;
  backoff: BackoffConfig;
  /**
   * Allows a plaintext transport (ws://, mqtt://, gRPC without TLS), which
   * sends the device's credentials and its pods' Secrets in clear. Off by
   * default; arhat warns at start when it is on.
   */
  insecure: boolean;
}

/** arhat dials aranya's WebSocket listener. */
export interface WebSocketMethodConfig extends MethodCommon {
  method: "websocket";
  /** `ws://` or `wss://` URL of aranya's link endpoint, e.g. `wss://aranya.example.com/v1/link`. */
  url: string;
}

/** arhat talks to aranya through an MQTT broker. */
export interface MqttMethodConfig extends MethodCommon {
  method: "mqtt";
  /** `mqtt://host:port` or `mqtts://host:port`. */
  broker: string;
  mqtt: {
    /** Topic prefix; must equal the EdgeDevice's `mqttConfig.messageNamespace`. */
    messageNamespace: string;
    keepaliveSeconds: number;
    /** Default (undefined): `arhat-<namespace>-<name>`, chosen by the dialer. */
    clientId?: string;
    username?: string;
    password?: string;
  };
}

/** arhat calls aranya's gRPC service. */
export interface GrpcMethodConfig extends MethodCommon {
  method: "grpc";
  /** `host:port` of aranya's gRPC endpoint. */
  target: string;
}

/** One transport to try. */
export type ConnectivityMethodConfig = WebSocketMethodConfig | MqttMethodConfig | GrpcMethodConfig;

/** arhat's validated config with every default filled in. */
export interface ArhatConfig {
  /** The EdgeDevice this agent is: its namespace and name (the Node's name). */
  device: { namespace: string; name: string };
  /** Where arhat keeps its journal and pod volumes. */
  stateDir: string;
  log: { level: LogLevel };
  runtime: {
    /** Unix socket path of the Docker Engine API (dockerd or Podman's service). */
    endpoint: string;
    /** Image of each pod's infra container (holds the pod's network namespace). */
    infraImage: string;
    /** Command of the infra container; default (undefined): the image's own entrypoint. */
    infraCommand?: string[];
    /**
     * Network of pods without hostNetwork: "bridge" (default: the engine's
     * default network, Podman's "podman" or Docker's bridge), a network the
     * engine knows by name, or "none" (loopback only: no pod IP, no hostPort).
     */
    podNetwork: string;
    pullTimeoutSeconds: number;
  };
  /** Host management through the virtual pod; everything off by default. */
  host: {
    allowExec: boolean;
    allowAttach: boolean;
    allowLogs: boolean;
    allowPortForward: boolean;
    /** Directory whose files `kubectl logs` on the virtual pod may read. */
    logDir?: string;
  };
  nodeStatus: {
    memoryAvailablePercent: number;
    diskAvailablePercent: number;
    pidsAvailablePercent: number;
    maxPods: number;
    /**
     * How often conditions and resources are re-evaluated (the floor); the node
     * status is pushed to aranya only when it changed.
     */
    checkIntervalMs: number;
    /** Longest time between two node status pushes while connected (the ceiling). */
    maxIntervalMs: number;
  };
  connectivity: { methods: ConnectivityMethodConfig[] };
}

/**
 * Reads and validates the config file at `path`.
 *
 * @param env where `${VAR}` references are looked up (default: the process environment).
 * @throws NotFoundError when the file does not exist; ConfigError (an InvalidInputError) listing
 *   every problem when it is not valid YAML or not a valid config.
 */
export async function loadArhatConfig(
  path: string,
  env: EnvSource = processEnv,
): Promise<ArhatConfig> {
  return parseConfig(await readConfigFile(path), env, `arhat config "${path}"`);
}

/**
 * Validates config `text` (YAML); see the module doc.
 *
 * @param source names the config in the error message.
 * @throws ConfigError (an InvalidInputError) listing every problem.
 */
export function parseConfig(
  text: string,
  env: EnvSource = processEnv,
  source = "arhat config",
): ArhatConfig {
  const problems = new ConfigProblems(env);
  const root = new ConfigReader(parseConfigYaml(text, problems, source), "", problems);
  const config = readConfig(root);
  root.finish();
  problems.throwIfAny(source);
  return config;
}

const checkImage = (v: string) =>
  v !== "" && !/\s/.test(v) ? undefined : "must be an image reference without spaces";

function readConfig(root: ConfigReader): ArhatConfig {
  const device = root.object("device", { required: true });
  const config: ArhatConfig = {
    device: {
      namespace: device.string("namespace", { required: true, check: checkLabel }) ?? "",
      name: device.string("name", { required: true, check: checkSubdomain }) ?? "",
    },
    stateDir: root.string("stateDir", { default: CONFIG_DEFAULTS.stateDir, check: checkAbsolute }),
    log: readLog(root.object("log")),
    runtime: readRuntime(root.object("runtime")),
    host: readHost(root.object("host")),
    nodeStatus: readNodeStatus(root.object("nodeStatus")),
    connectivity: readConnectivity(root.object("connectivity", { required: true })),
  };
  device.finish();
  return config;
}

function readLog(r: ConfigReader): ArhatConfig["log"] {
  const level = r.string("level", {
    default: CONFIG_DEFAULTS.logLevel,
    oneOf: ["debug", "info", "warn", "error"],
  }) as LogLevel;
  r.finish();
  return { level };
}

function readRuntime(r: ConfigReader): ArhatConfig["runtime"] {
  const endpoint = r.string("endpoint", {
    default: CONFIG_DEFAULTS.runtimeEndpoint,
    check: (v) =>
      checkAbsolute(v.replace(/^unix:\/\//, "")) === undefined
        ? undefined
        : 'must be a Unix socket path, "/path" or "unix:///path"',
  }).replace(/^unix:\/\//, "");
  const runtime: ArhatConfig["runtime"] = {
    endpoint,
    infraImage: r.string("infraImage", { default: CONFIG_DEFAULTS.infraImage, check: checkImage }),
    podNetwork: r.string("podNetwork", {
      default: "bridge",
      check: (v) =>
        v === "host" || v.startsWith("container:")
          ? 'must be "bridge", "none" or a network name; host networking is asked per pod (hostNetwork)'
          : /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(v)
          ? undefined
          : "must be a network name (letters, digits, '_', '.', '-')",
    }),
    pullTimeoutSeconds: r.number("pullTimeoutSeconds", {
      default: CONFIG_DEFAULTS.pullTimeoutSeconds,
      integer: true,
      min: 1,
    }),
  };
  const infraCommand = r.strings("infraCommand");
  if (infraCommand !== undefined) {
    if (infraCommand.length === 0) {
      r.problems.add(r.pathOf("infraCommand"), "must not be empty when set");
    } else {
      runtime.infraCommand = infraCommand;
    }
  }
  r.finish();
  return runtime;
}

function readHost(r: ConfigReader): ArhatConfig["host"] {
  const host: ArhatConfig["host"] = {
    allowExec: r.boolean("allowExec", { default: false }),
    allowAttach: r.boolean("allowAttach", { default: false }),
    allowLogs: r.boolean("allowLogs", { default: false }),
    allowPortForward: r.boolean("allowPortForward", { default: false }),
  };
  const logDir = r.string("logDir", { check: checkAbsolute });
  if (logDir !== undefined) host.logDir = logDir;
  r.finish();
  return host;
}

function readNodeStatus(r: ConfigReader): ArhatConfig["nodeStatus"] {
  const percent = (key: string, def: number) => r.number(key, { default: def, min: 0, max: 100 });
  const status: ArhatConfig["nodeStatus"] = {
    memoryAvailablePercent: percent(
      "memoryAvailablePercent",
      CONFIG_DEFAULTS.memoryAvailablePercent,
    ),
    diskAvailablePercent: percent("diskAvailablePercent", CONFIG_DEFAULTS.diskAvailablePercent),
    pidsAvailablePercent: percent("pidsAvailablePercent", CONFIG_DEFAULTS.pidsAvailablePercent),
    maxPods: r.number("maxPods", { default: CONFIG_DEFAULTS.maxPods, integer: true, min: 0 }),
    checkIntervalMs: r.duration("checkInterval", {
      default: CONFIG_DEFAULTS.nodeStatusCheckInterval,
      min: 1000,
    }),
    maxIntervalMs: r.duration("maxInterval", {
      default: CONFIG_DEFAULTS.nodeStatusMaxInterval,
      min: 1000,
    }),
  };
  if (status.maxIntervalMs < status.checkIntervalMs) {
    r.problems.add(
      r.pathOf("maxInterval"),
      `must not be shorter than checkInterval (${status.checkIntervalMs}ms); got ${status.maxIntervalMs}ms`,
    );
  }
  r.finish();
  return status;
}

function readConnectivity(r: ConfigReader): ArhatConfig["connectivity"] {
  const defaults = readBackoff(r.object("backoff"), {
    initialMs: parseDuration(CONFIG_DEFAULTS.backoffInitialDelay),
    maxMs: parseDuration(CONFIG_DEFAULTS.backoffMaxDelay),
    factor: CONFIG_DEFAULTS.backoffFactor,
  });
  const items = r.objects("methods", { required: true });
  if (r.has("methods") && items.length === 0) {
    r.problems.add(r.pathOf("methods"), "must list at least one method");
  }
  const methods: ConnectivityMethodConfig[] = [];
  items.forEach((item, i) => {
    const m = readMethod(item, i, defaults);
    if (m) methods.push(m);
  });
  r.finish();
  return { methods };
}

function readBackoff(r: ConfigReader, defaults: BackoffConfig): BackoffConfig {
  const backoff: BackoffConfig = {
    initialMs: r.duration("initialDelay", { min: 1 }) ?? defaults.initialMs,
    maxMs: r.duration("maxDelay", { min: 1 }) ?? defaults.maxMs,
    factor: r.number("factor", { default: defaults.factor, min: 1, max: 10 }),
  };
  if (backoff.maxMs < backoff.initialMs) {
    r.problems.add(
      r.pathOf("maxDelay"),
      `must not be shorter than the initial delay (${backoff.initialMs}ms); got ${backoff.maxMs}ms`,
    );
  }
  r.finish();
  return backoff;
}

/** Fields only some methods take, to say "not used by" instead of "unknown field". */
const METHOD_FIELDS: Record<ConnectivityMethodName, string[]> = {
  websocket: ["url"],
  mqtt: ["broker", "mqtt"],
  grpc: ["target"],
};

function readMethod(
  r: ConfigReader,
  index: number,
  defaultBackoff: BackoffConfig,
): ConnectivityMethodConfig | undefined {
  const method = r.string("method", { required: true, oneOf: CONNECTIVITY_METHODS }) as
    | ConnectivityMethodName
    | undefined;
  if (method === undefined) return undefined; // the problem is recorded; other fields depend on it
  const common: MethodCommon = {
    priority: r.number("priority", { default: index, integer: true, min: 0 }),
    dialTimeoutMs: r.duration("dialTimeout", { default: CONFIG_DEFAULTS.dialTimeout, min: 1 }),
    backoff: readBackoff(r.object("backoff"), defaultBackoff),
    insecure: r.boolean("insecure", { default: false }),
  };
  const clear = (scheme: string) =>
    `"${scheme}" sends the device's token and its pods' Secrets in clear; use TLS, or set insecure: true to allow it`;
  let tls: TlsFiles | undefined;
  if (r.has("tls")) {
    tls = readClientTls(r.object("tls"));
    common.tls = tls;
  } else {
    r.ignore("tls");
  }
  const token = r.string("token", {
    secret: true,
    check: (v) => (v === "" ? "must not be empty" : undefined),
  });
  const tokenFile = r.string("tokenFile", { check: checkAbsolute });
  // Presence, not validity, decides which credential is meant (a bad one is reported already).
  const hasToken = r.has("token") || r.has("tokenFile");
  if (token !== undefined && tokenFile !== undefined) {
    r.problems.add(r.pathOf("token"), "set either token or tokenFile, not both");
  }
  if (token !== undefined) common.token = token;
  if (tokenFile !== undefined) common.tokenFile = tokenFile;
  const hasClientCert = tls?.certFile !== undefined;

  let out: ConnectivityMethodConfig | undefined;
  switch (method) {
    case "websocket": {
      const url = r.string("url", { required: true, check: urlCheck(["ws:", "wss:"]) });
      if (hasClientCert && url?.startsWith("ws:")) {
        r.problems.add(r.pathOf("tls"), "a client certificate needs a wss:// url");
      } else if (url?.startsWith("ws:") && !common.insecure) {
        r.problems.add(r.pathOf("url"), clear("ws://"));
      }
      if (url !== undefined) out = { method, ...common, url };
      break;
    }
    case "mqtt": {
      const broker = r.string("broker", { required: true, check: urlCheck(["mqtt:", "mqtts:"]) });
      if (hasClientCert && broker?.startsWith("mqtt:")) {
        r.problems.add(r.pathOf("tls"), "a client certificate needs an mqtts:// broker");
      } else if (broker?.startsWith("mqtt:") && !common.insecure) {
        r.problems.add(r.pathOf("broker"), clear("mqtt://"));
      }
      if (!hasToken) {
        r.problems.add(r.pathOf("token"), "the mqtt method needs token or tokenFile");
      }
      const mqtt = readMqtt(r.object("mqtt", { required: true }));
      if (broker !== undefined && mqtt !== undefined) out = { method, ...common, broker, mqtt };
      break;
    }
    case "grpc": {
      const target = r.string("target", {
        required: true,
        check: (v) =>
          /^([^\s/:[\]]+|\[[0-9a-fA-F:.]+\]):\d{1,5}$/.test(v) &&
            Number(v.split(":").pop()) <= 65535
            ? undefined
            : "must be host:port",
      });
      // gRPC is TLS unless plaintext (h2c) is asked for explicitly; a tls block without caFile
      // trusts the system's CAs.
      if (common.insecure && tls) {
        r.problems.add(r.pathOf("insecure"), "insecure (h2c) and tls exclude each other");
      }
      if (target !== undefined) out = { method, ...common, target };
      break;
    }
  }
  if (method !== "mqtt" && !hasToken && !hasClientCert) {
    r.problems.add(
      r.pathOf("token"),
      "set token, tokenFile or a client certificate (tls.certFile and tls.keyFile)",
    );
  }
  for (const [other, fields] of Object.entries(METHOD_FIELDS)) {
    if (other === method) continue;
    for (const f of fields) {
      if (r.has(f)) r.problems.add(r.pathOf(f), `not used by method "${method}"`);
      r.ignore(f);
    }
  }
  r.finish();
  return out;
}

function urlCheck(protocols: string[]): (v: string) => string | undefined {
  const want = protocols.map((p) => `${p}//`).join(" or ");
  return (v) => {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      return `must be a ${want} URL`;
    }
    if (!protocols.includes(url.protocol) || url.hostname === "") return `must be a ${want} URL`;
    return undefined;
  };
}

function readMqtt(r: ConfigReader): MqttMethodConfig["mqtt"] | undefined {
  const messageNamespace = r.string("messageNamespace", {
    required: true,
    check: (v) =>
      v.length === 0 || v.length > 200 || /[+#\0]/.test(v) || v.startsWith("$") || v.endsWith("/")
        ? 'must be an MQTT topic prefix of 1 to 200 characters, without "+", "#" or NUL, ' +
          'not starting with "$" nor ending with "/"'
        : undefined,
  });
  const keepaliveSeconds = r.number("keepaliveSeconds", {
    default: CONFIG_DEFAULTS.mqttKeepaliveSeconds,
    integer: true,
    min: 1,
    max: 65535,
  });
  const clientId = r.string("clientId", {
    check: (v) => (v.length >= 1 && v.length <= 128 ? undefined : "must be 1 to 128 characters"),
  });
  const username = r.string("username");
  const password = r.string("password", { secret: true });
  r.finish();
  if (messageNamespace === undefined) return undefined;
  const mqtt: MqttMethodConfig["mqtt"] = { messageNamespace, keepaliveSeconds };
  if (clientId !== undefined) mqtt.clientId = clientId;
  if (username !== undefined) mqtt.username = username;
  if (password !== undefined) mqtt.password = password;
  return mqtt;
}
