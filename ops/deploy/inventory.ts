/**
 * The deploy inventory: which cluster, how devices reach aranya, and one entry per device (name,
 * SSH address, user, key, arch, connectivity). Read with the shared {@link ConfigReader}, so every
 * problem is reported at once with its field path, and `${VAR}` works in strings.
 *
 * Relative paths (keys, CA files, known_hosts, the artifact folder) are relative to the inventory
 * file; `~/` is the user's home.
 *
 * @module
 */
import { checkLabel, DNS_SUBDOMAIN } from "@aranya/common/config_checks";
import {
  ConfigError,
  ConfigProblems,
  ConfigReader,
  parseConfigYaml,
  readConfigFile,
} from "@aranya/common/config_reader";
import { envLookup, type EnvSource } from "@aranya/common/env_expand";
import { errorMessage } from "@aranya/common/errors";

/** CPU architectures arhat is built for, as `uname -m` reports them. */
export const ARCHES = ["x86_64", "aarch64"] as const;
export type Arch = typeof ARCHES[number];

/** The Deno target triple of an architecture. */
export function targetOf(arch: Arch): string {
  return `${arch}-unknown-linux-gnu`;
}

/** How a device's arhat reaches aranya. */
export const METHODS = ["websocket", "grpc", "mqtt"] as const;
export type Method = typeof METHODS[number];

/** How arhat is kept running on the device. */
export const INITS = ["auto", "systemd", "none"] as const;
export type Init = typeof INITS[number];

/** What the devices dial, per method (only the methods devices use must be set). */
export interface Links {
  websocket?: { url: string; caFile?: string; insecure?: boolean };
  grpc?: { target: string; caFile?: string; insecure?: boolean };
  mqtt?: { broker: string; caFile?: string; insecure?: boolean };
}

/** One device of the inventory, defaults applied. */
export interface DeviceEntry {
  /** "<namespace>/<name>", for messages. */
  readonly key: string;
  name: string;
  namespace: string;
  /** SSH host name or IP. */
  host: string;
  port: number;
  user: string;
  /** Private key file (absolute). */
  keyFile: string;
  /** Expected host key ("ssh-ed25519 AAAA…" or "SHA256:…"); else {@link knownHostsFile}. */
  hostKey?: string;
  knownHostsFile: string;
  arch: Arch;
  connectivity: Method;
  init: Init;
  /** arhat's container engine socket on the device, "unix:///path". */
  runtimeEndpoint: string;
  /** The infra container image on the device. */
  infraImage?: string;
  /** Host management switches of arhat's config. */
  hostManagement: {
    allowExec: boolean;
    allowAttach: boolean;
    allowLogs: boolean;
    allowPortForward: boolean;
  };
  /** Labels for the EdgeDevice's Node. */
  labels: Record<string, string>;
}

/** The whole inventory. */
export interface Inventory {
  /** The inventory file (absolute). */
  readonly file: string;
  /** kubeconfig file (absolute) or undefined: KUBECONFIG, ~/.kube/config or in-cluster. */
  kubeconfig?: string;
  aranya: {
    /** Apply deploy/ (namespace, CRD, RBAC, config, Deployment, Service). */
    install: boolean;
    /** Overrides the Deployment's image. */
    image?: string;
    /** Serving certificate for device links: becomes Secret aranya-system/aranya-tls. */
    tls?: { certFile: string; keyFile: string };
  };
  links: Links;
  artifacts: {
    /** Folder with compiled `arhat-<target>` binaries (absolute). */
    dir: string;
    /** Ship a `deno run` launcher when no compiled binary exists (ops/build/launcher.ts). */
    launcher: boolean;
  };
  /** How long to wait for aranya to issue a device's credentials, ms. */
  credentialsTimeoutMs: number;
  /** How long to wait for a device's Node to turn Ready after arhat starts, ms. */
  nodeReadyTimeoutMs: number;
  /** Devices handled at once. */
  parallel: number;
  devices: DeviceEntry[];
}

/** Options of {@link readInventory}. */
export interface ReadInventoryOptions {
  env: EnvSource;
  /** The user's home, for `~/` (default $HOME). */
  home?: string;
}

/** Reads and validates an inventory file; throws one {@link ConfigError} listing every problem. */
export async function readInventory(file: string, opts: ReadInventoryOptions): Promise<Inventory> {
  const abs = file.startsWith("/") ? file : `${Deno.cwd()}/${file}`;
  let text: string;
  try {
    text = await readConfigFile(abs);
  } catch (err) {
    // The deploy tool reports every inventory problem as one ConfigError (exit code 2).
    throw new ConfigError(`inventory "${file}"`, [`cannot read the file: ${errorMessage(err)}`]);
  }
  return parseInventory(text, { ...opts, file: abs });
}

/** Parses inventory YAML (see {@link readInventory}); `file` anchors relative paths. */
export function parseInventory(
  text: string,
  opts: ReadInventoryOptions & { file: string },
): Inventory {
  const source = `inventory "${opts.file}"`;
  const problems = new ConfigProblems(opts.env);
  const root = new ConfigReader(parseConfigYaml(text, problems, source), "", problems);
  const dir = opts.file.replace(/\/[^/]*$/, "") || "/";
  const home = opts.home ?? envLookup(opts.env)("HOME") ?? "/root";
  const path = (p: string) =>
    normalize(p.startsWith("/") ? p : p.startsWith("~/") ? `${home}/${p.slice(2)}` : `${dir}/${p}`);
  const pathOpt = (r: ConfigReader, key: string, required = false) => {
    const v = r.string(key, { required });
    return v === undefined ? undefined : path(v);
  };

  const cluster = root.object("cluster");
  const kubeconfig = pathOpt(cluster, "kubeconfig");
  cluster.finish();

  const ar = root.object("aranya");
  const install = ar.boolean("install", { default: true });
  const image = ar.string("image");
  let tls: Inventory["aranya"]["tls"];
  if (ar.has("tls")) {
    const t = ar.object("tls");
    const certFile = pathOpt(t, "certFile", true);
    const keyFile = pathOpt(t, "keyFile", true);
    t.finish();
    if (certFile && keyFile) tls = { certFile, keyFile };
  }
  ar.finish();

  const links: Links = {};
  const lr = root.object("links");
  if (lr.has("websocket")) {
    const w = lr.object("websocket");
    const url = w.string("url", {
      required: true,
      check: (v) =>
        /^wss?:\/\/[^/]+/.test(v) ? undefined : 'must be a "wss://host[:port]/path" URL',
    });
    const caFile = pathOpt(w, "caFile");
    const insecure = w.boolean("insecure", { default: false });
    if (url?.startsWith("ws:") && !insecure) {
      w.problems.add(
        w.pathOf("url"),
        'a "ws://" link sends tokens in clear; use wss:// or set insecure: true',
      );
    }
    w.finish();
    if (url) {
      links.websocket = { url, ...(caFile ? { caFile } : {}), ...(insecure ? { insecure } : {}) };
    }
  }
  if (lr.has("grpc")) {
    const g = lr.object("grpc");
    const target = g.string("target", {
      required: true,
      check: (v) => /^[^/:\s]+:\d+$/.test(v) ? undefined : 'must be "host:port"',
    });
    const caFile = pathOpt(g, "caFile");
    const insecure = g.boolean("insecure", { default: false });
    g.finish();
    if (target) {
      links.grpc = { target, ...(caFile ? { caFile } : {}), ...(insecure ? { insecure } : {}) };
    }
  }
  if (lr.has("mqtt")) {
    const m = lr.object("mqtt");
    const broker = m.string("broker", {
      required: true,
      check: (v) => /^mqtts?:\/\/[^/]+/.test(v) ? undefined : 'must be a "mqtt(s)://host:port" URL',
    });
    const caFile = pathOpt(m, "caFile");
    const insecure = m.boolean("insecure", { default: false });
    if (broker?.startsWith("mqtt:") && !insecure) {
      m.problems.add(
        m.pathOf("broker"),
        'an "mqtt://" broker sends tokens in clear; use mqtts:// or set insecure: true',
      );
    }
    m.finish();
    if (broker) {
      links.mqtt = { broker, ...(caFile ? { caFile } : {}), ...(insecure ? { insecure } : {}) };
    }
  }
  lr.finish();

  const art = root.object("artifacts");
  const artifacts = {
    dir: path(art.string("dir", { default: "dist" })),
    launcher: art.boolean("launcher", { default: false }),
  };
  art.finish();

  const timeouts = root.object("timeouts");
  const credentialsTimeoutMs = timeouts.duration("credentials", { default: "2m", min: 1000 });
  const nodeReadyTimeoutMs = timeouts.duration("nodeReady", { default: "3m", min: 1000 });
  timeouts.finish();
  const parallel = root.number("parallel", { default: 4, integer: true, min: 1, max: 64 });

  const defaults = root.object("defaults");
  const d = readDeviceFields(defaults, path, false);
  defaults.finish();

  const devices: DeviceEntry[] = [];
  const seen = new Set<string>();
  const items = root.objects("devices", { required: true });
  if (root.has("devices") && items.length === 0) {
    problems.add("devices", "must list one device or more");
  }
  for (const r of items) {
    const f = readDeviceFields(r, path, true);
    r.finish();
    const merged = { ...d, ...f };
    const namespace = merged.namespace ?? "edge";
    if (!merged.name || !merged.address) continue;
    const key = `${namespace}/${merged.name}`;
    if (seen.has(key)) problems.add(`${r.path}.name`, `device "${key}" is listed twice`);
    seen.add(key);
    const { host, port } = splitAddress(merged.address);
    const connectivity = merged.connectivity ?? "websocket";
    if (!links[connectivity]) {
      problems.add(
        `${r.path}.connectivity`,
        `is "${connectivity}" but links.${connectivity} is not set (what should the device dial?)`,
      );
    }
    devices.push({
      key,
      name: merged.name,
      namespace,
      host,
      port,
      user: merged.user ?? "root",
      keyFile: merged.key ?? path("~/.ssh/id_ed25519"),
      ...(merged.hostKey ? { hostKey: merged.hostKey } : {}),
      knownHostsFile: merged.knownHosts ?? path("~/.ssh/known_hosts"),
      arch: merged.arch ?? "x86_64",
      connectivity,
      init: merged.init ?? "auto",
      runtimeEndpoint: merged.runtimeEndpoint ?? "unix:///var/run/docker.sock",
      ...(merged.infraImage ? { infraImage: merged.infraImage } : {}),
      hostManagement: { ...HOST_OFF, ...d.host, ...f.host },
      labels: { ...d.labels, ...f.labels },
    });
  }
  root.finish();
  problems.throwIfAny(source);
  return {
    file: opts.file,
    ...(kubeconfig ? { kubeconfig } : {}),
    aranya: { install, ...(image ? { image } : {}), ...(tls ? { tls } : {}) },
    links,
    artifacts,
    credentialsTimeoutMs,
    nodeReadyTimeoutMs,
    parallel,
    devices,
  };
}

const HOST_OFF = {
  allowExec: false,
  allowAttach: false,
  allowLogs: false,
  allowPortForward: false,
};

/** Fields a device entry and `defaults` share; only those present are set. */
interface DeviceFields {
  name?: string;
  namespace?: string;
  address?: string;
  user?: string;
  key?: string;
  hostKey?: string;
  knownHosts?: string;
  arch?: Arch;
  connectivity?: Method;
  init?: Init;
  runtimeEndpoint?: string;
  infraImage?: string;
  host?: Partial<DeviceEntry["hostManagement"]>;
  labels?: Record<string, string>;
}

function readDeviceFields(
  r: ConfigReader,
  path: (p: string) => string,
  isDevice: boolean,
): DeviceFields {
  const f: DeviceFields = {};
  const set = <K extends keyof DeviceFields>(k: K, v: DeviceFields[K] | undefined) => {
    if (v !== undefined) f[k] = v;
  };
  if (isDevice) {
    set("name", r.string("name", { required: true, check: checkLabel }));
    set(
      "address",
      r.string("address", {
        required: true,
        check: (v) =>
          /^(\[[0-9a-fA-F:]+\]|[^\s:\[\]]+)(:\d{1,5})?$/.test(v)
            ? undefined
            : 'must be "host", "host:port" or "[ipv6]:port"',
      }),
    );
  } else {
    for (const k of ["name", "address"]) {
      if (r.has(k)) r.problems.add(r.pathOf(k), "belongs to each device, not to defaults");
      r.ignore(k);
    }
  }
  set("namespace", r.string("namespace", { check: checkLabel }));
  set(
    "user",
    r.string("user", {
      check: (v) => /^[a-z_][a-z0-9_.-]*$/i.test(v) ? undefined : "must be a user name",
    }),
  );
  const key = r.string("key");
  if (key !== undefined) f.key = path(key);
  set(
    "hostKey",
    r.string("hostKey", {
      check: (v) =>
        /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(v) || /^(ssh|ecdsa)-[a-z0-9-]+ [A-Za-z0-9+/=]+/.test(v)
          ? undefined
          : 'must be a public key line ("ssh-ed25519 AAAA...") or a "SHA256:..." fingerprint',
    }),
  );
  const kh = r.string("knownHosts");
  if (kh !== undefined) f.knownHosts = path(kh);
  set("arch", r.string("arch", { oneOf: ARCHES }) as Arch | undefined);
  set("connectivity", r.string("connectivity", { oneOf: METHODS }) as Method | undefined);
  set("init", r.string("init", { oneOf: INITS }) as Init | undefined);
  if (r.has("runtime")) {
    const rt = r.object("runtime");
    set(
      "runtimeEndpoint",
      rt.string("endpoint", {
        check: (v) => /^(unix:\/\/)?\//.test(v) ? undefined : 'must be "unix:///path" or "/path"',
      })?.replace(/^\//, "unix:///"),
    );
    set("infraImage", rt.string("infraImage"));
    rt.finish();
  }
  if (r.has("host")) {
    const h = r.object("host");
    const host: Partial<DeviceEntry["hostManagement"]> = {};
    for (const k of Object.keys(HOST_OFF) as (keyof DeviceEntry["hostManagement"])[]) {
      const v = h.boolean(k);
      if (v !== undefined) host[k] = v;
    }
    h.finish();
    f.host = host;
  }
  if (r.has("labels")) {
    const l = r.object("labels");
    const labels: Record<string, string> = {};
    for (const k of l.keys()) {
      const bad = checkLabelKey(k);
      const v = l.string(k, {
        check: (x) =>
          /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(x) && x.length <= 63
            ? undefined
            : "must be a label value (at most 63 letters, digits, '-', '_', '.')",
      });
      if (bad) r.problems.add(l.pathOf(k), bad);
      else if (v !== undefined) labels[k] = v;
    }
    l.finish();
    f.labels = labels;
  }
  return f;
}

function checkLabelKey(k: string): string | undefined {
  const [a, b] = k.includes("/") ? k.split("/", 2) as [string, string] : [undefined, k];
  if (a !== undefined && !(DNS_SUBDOMAIN.test(a) && a.length <= 253)) {
    return "the label key's prefix must be a DNS subdomain";
  }
  return /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(b) && b.length <= 63
    ? undefined
    : "must be a label key (name at most 63 letters, digits, '-', '_', '.')";
}

/** An absolute path without "." and ".." segments. */
function normalize(path: string): string {
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "..") out.pop();
    else if (seg !== "." && seg !== "") out.push(seg);
  }
  return `/${out.join("/")}`;
}

/** "host", "host:port", "[v6]:port" -> parts (port 22 by default). */
export function splitAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(address) ?? /^([^:]+)(?::(\d+))?$/.exec(address);
  if (!m) return { host: address, port: 22 };
  return { host: m[1]!, port: m[2] ? Number(m[2]) : 22 };
}
