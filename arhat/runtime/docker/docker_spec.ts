/**
 * Mapping between the runtime's types and the Docker Engine API's JSON (shared
 * by dockerd and Podman's compatible service): a ContainerSpec to the create
 * body, the engine's container, image and stats objects to ContainerInfo,
 * ImageInfo and ContainerStats.
 *
 * @module
 */
import type { ContainerInfo, ContainerSpec, ContainerStats, ImageInfo } from "../runtime.ts";

/** The engines' "never" timestamp. */
const ZERO_TIME = "0001-01-01T00:00:00Z";

export interface RawContainer {
  Id: string;
  Name?: string;
  Image?: string;
  Created?: string;
  RestartCount?: number;
  Config?: { Image?: string; Labels?: Record<string, string> | null; Tty?: boolean };
  State?: {
    Status?: string;
    ExitCode?: number;
    StartedAt?: string;
    FinishedAt?: string;
    Error?: string;
    Pid?: number;
    OOMKilled?: boolean;
  };
  NetworkSettings?: {
    IPAddress?: string;
    Networks?: Record<string, { IPAddress?: string }> | null;
  };
}

/** The parts of `GET /containers/{id}/stats` that {@link DockerRuntime.stats} reads. */
export interface RawStats {
  read?: string;
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
  memory_stats?: { usage?: number; stats?: Record<string, number> | null };
}

export interface RawImage {
  Id: string;
  RepoTags?: string[] | null;
  Size?: number;
  Config?: { User?: string } | null;
}

/** Translates a {@link ContainerSpec} into the engine's create body. */
export function createBody(spec: ContainerSpec): Record<string, unknown> {
  const exposed: Record<string, Record<string, never>> = {};
  const bindings: Record<string, { HostIp?: string; HostPort: string }[]> = {};
  for (const p of spec.ports ?? []) {
    const key = `${p.containerPort}/${p.protocol}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: p.hostIp, HostPort: String(p.hostPort) });
  }
  return {
    Image: spec.image,
    Entrypoint: spec.entrypoint,
    Cmd: spec.cmd,
    Env: spec.env && toEnv(spec.env),
    WorkingDir: spec.workingDir,
    Labels: spec.labels,
    Hostname: spec.hostname,
    User: spec.user,
    Tty: spec.tty ?? false,
    OpenStdin: spec.openStdin ?? false,
    StdinOnce: spec.stdinOnce ?? false,
    AttachStdin: false,
    AttachStdout: false,
    AttachStderr: false,
    StopTimeout: spec.stopTimeoutSeconds,
    ExposedPorts: spec.ports?.length ? exposed : undefined,
    HostConfig: {
      // Mounts (not Binds): paths with ":" or "," need no escaping.
      Mounts: spec.mounts?.map((m) => ({
        Type: m.volume ? "volume" : "bind",
        Source: m.volume ?? m.hostPath,
        Target: m.containerPath,
        ReadOnly: m.readOnly ?? false,
      })),
      PortBindings: spec.ports?.length ? bindings : undefined,
      NetworkMode: spec.network,
      IpcMode: spec.ipcMode,
      PidMode: spec.pidMode,
      UTSMode: spec.utsMode,
      Dns: spec.dnsServers,
      DnsSearch: spec.dnsSearches,
      DnsOptions: spec.dnsOptions,
      ExtraHosts: spec.extraHosts,
      Privileged: spec.privileged ?? false,
      ReadonlyRootfs: spec.readOnlyRootfs ?? false,
      CapAdd: spec.capAdd,
      CapDrop: spec.capDrop,
      GroupAdd: spec.groupAdd?.length ? spec.groupAdd : undefined,
      SecurityOpt: securityOpts(spec),
      Sysctls: spec.sysctls && Object.keys(spec.sysctls).length ? spec.sysctls : undefined,
      Memory: spec.memoryLimitBytes,
      MemoryReservation: spec.memoryReservationBytes,
      CpuShares: spec.cpuShares,
      NanoCpus: spec.cpuLimitMillis === undefined
        ? undefined
        : Math.round(spec.cpuLimitMillis * 1_000_000),
    },
  };
}

export function securityOpts(spec: ContainerSpec): string[] | undefined {
  const opts = [...(spec.noNewPrivileges ? ["no-new-privileges"] : []), ...spec.securityOpts ?? []];
  return opts.length ? opts : undefined;
}

export function toEnv(env: Record<string, string>): string[] {
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

export function toImage(raw: RawImage): ImageInfo {
  return {
    id: raw.Id,
    repoTags: (raw.RepoTags ?? []).filter((t) => t !== "<none>:<none>"),
    size: raw.Size ?? 0,
    user: raw.Config?.User ?? "",
  };
}

export const STATES = new Set<ContainerInfo["state"]>([
  "created",
  "running",
  "paused",
  "restarting",
  "exited",
  "dead",
]);

export function toContainer(raw: RawContainer): ContainerInfo {
  const s = raw.State ?? {};
  const status = (s.Status ?? "").toLowerCase();
  // Podman's own words for states the Docker API calls created and exited.
  const state = STATES.has(status as ContainerInfo["state"])
    ? status as ContainerInfo["state"]
    : status === "configured" || status === "initialized"
    ? "created"
    : status === "stopped"
    ? "exited"
    : "unknown";
  const networks = Object.values(raw.NetworkSettings?.Networks ?? {});
  return {
    id: raw.Id,
    name: (raw.Name ?? "").replace(/^\//, ""),
    image: raw.Config?.Image ?? "",
    imageId: raw.Image ?? "",
    labels: raw.Config?.Labels ?? {},
    state,
    exitCode: s.ExitCode ?? 0,
    createdAt: time(raw.Created),
    startedAt: time(s.StartedAt),
    finishedAt: time(s.FinishedAt),
    error: s.Error ?? "",
    oomKilled: s.OOMKilled ?? false,
    pid: s.Pid ?? 0,
    restartCount: raw.RestartCount ?? 0,
    ipAddress: raw.NetworkSettings?.IPAddress ||
      networks.map((n) => n.IPAddress ?? "").find((ip) => ip !== "") || "",
  };
}

export function toStats(raw: RawStats, timeMs: number): ContainerStats {
  const m = raw.memory_stats ?? {};
  const usage = m.usage ?? 0;
  const detail = m.stats ?? {};
  // cgroup v1 names the hierarchical counters total_*; v2 has only the plain ones.
  const inactiveFile = detail.total_inactive_file ?? detail.inactive_file ?? 0;
  const rss = detail.total_rss ?? detail.anon ?? detail.rss;
  return {
    timeMs,
    cpuUsageCoreNanoseconds: raw.cpu_stats?.cpu_usage?.total_usage ?? 0,
    memoryUsageBytes: usage,
    memoryWorkingSetBytes: inactiveFile < usage ? usage - inactiveFile : 0,
    memoryRssBytes: rss,
  };
}

export function time(t: string | undefined): string {
  return !t || t === ZERO_TIME || t.startsWith("0001-01-01") ? "" : t;
}

/** A command line short enough for an error message. */
export function abbreviate(text: string, max = 60): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`;
}

export function enc(id: string): string {
  return encodeURIComponent(id);
}
