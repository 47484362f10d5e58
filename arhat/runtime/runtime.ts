/**
 * `ContainerRuntime`: what arhat needs from a container engine. The Docker
 * Engine API implementation (`docker/`) drives both dockerd and Podman's
 * compatible service; pods are built on top of this interface by the pod
 * manager, never on the engine API directly.
 *
 * Ownership: the caller owns the streams it passes in (stdin) and must
 * consume or cancel the streams it gets back. Every method may reject with
 * `UnavailableError` (engine unreachable), `NotFoundError` (no such image or
 * container), `InvalidInputError` (the engine refused the request) or
 * `UnauthenticatedError` (registry credentials refused).
 */

/** Registry credentials for one pull. */
export interface RegistryCredentials {
  /** Registry host[:port], e.g. "registry.example.com:5000". */
  server: string;
  username?: string;
  password?: string;
  identityToken?: string;
  registryToken?: string;
}

/** An image present in the engine. */
export interface ImageInfo {
  id: string;
  repoTags: string[];
  size: number;
  /** The image's configured user ("", "name", "uid" or "uid:gid"); "" from image lists. */
  user: string;
}

/** A bind mount of a host path, or a mount of an engine volume (`volume`). */
export interface Mount {
  hostPath: string;
  containerPath: string;
  readOnly?: boolean;
  /** An engine volume's name: mounted instead of `hostPath`. */
  volume?: string;
}

/** A published port. */
export interface PortBinding {
  containerPort: number;
  protocol: "tcp" | "udp";
  hostPort: number;
  hostIp?: string;
}

/** What to create. */
export interface ContainerSpec {
  /** Engine-level name (unique). */
  name: string;
  image: string;
  /** Entrypoint override (Kubernetes `command`). */
  entrypoint?: string[];
  /** Arguments (Kubernetes `args`). */
  cmd?: string[];
  env?: Record<string, string>;
  workingDir?: string;
  labels?: Record<string, string>;
  mounts?: Mount[];
  ports?: PortBinding[];
  /**
   * Network: "none", "host", or "container:<id>" to join another container's
   * network namespace (how a pod's app containers join its infra container).
   */
  network?: string;
  /** "container:<id>" or "host" to share the IPC / PID / UTS (hostname) namespace. */
  ipcMode?: string;
  pidMode?: string;
  utsMode?: string;
  hostname?: string;
  dnsServers?: string[];
  dnsSearches?: string[];
  dnsOptions?: string[];
  extraHosts?: string[];
  tty?: boolean;
  openStdin?: boolean;
  stdinOnce?: boolean;
  privileged?: boolean;
  /** "uid" or "uid:gid". */
  user?: string;
  readOnlyRootfs?: boolean;
  capAdd?: string[];
  capDrop?: string[];
  /** Supplementary groups of the main process (pod fsGroup and supplementalGroups). */
  groupAdd?: string[];
  /** Sets no_new_privs (securityContext.allowPrivilegeEscalation: false). */
  noNewPrivileges?: boolean;
  /** Further engine security options, e.g. "seccomp=unconfined". */
  securityOpts?: string[];
  /** Namespaced kernel parameters, name -> value (set on the container owning the namespaces). */
  sysctls?: Record<string, string>;
  memoryLimitBytes?: number;
  /** Soft memory reservation (the request), bytes. */
  memoryReservationBytes?: number;
  /** Relative CPU weight (cgroup shares, 2..262144), from the CPU request. */
  cpuShares?: number;
  /** CPU limit in millicores. */
  cpuLimitMillis?: number;
  /** Seconds the engine waits after SIGTERM on stop (default 10). */
  stopTimeoutSeconds?: number;
}

/** State of a container as the engine reports it. */
export interface ContainerInfo {
  id: string;
  name: string;
  image: string;
  imageId: string;
  labels: Record<string, string>;
  state: "created" | "running" | "paused" | "restarting" | "exited" | "dead" | "unknown";
  exitCode: number;
  /** RFC 3339; empty when never. */
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  /** The engine's error text (e.g. why it failed to start). */
  error: string;
  /** The kernel's OOM killer ended the main process. */
  oomKilled: boolean;
  /** Main process pid on the host (0 when not running). */
  pid: number;
  restartCount: number;
  /** IP address in its network, if any. */
  ipAddress: string;
}

/** Options for reading logs. */
export interface LogOptions {
  follow?: boolean;
  timestamps?: boolean;
  /** Unix seconds; lines before are skipped. */
  since?: number;
  /** Last N lines only. */
  tail?: number;
  stdout?: boolean;
  stderr?: boolean;
  signal?: AbortSignal;
}

/** One piece of a container's output. */
export interface OutputChunk {
  stream: "stdout" | "stderr";
  data: Uint8Array;
}

/** Options for exec. */
export interface ExecOptions {
  cmd: string[];
  env?: Record<string, string>;
  tty?: boolean;
  /** Input; the exec's stdin is closed when this stream ends. */
  stdin?: ReadableStream<Uint8Array>;
  stdout?: boolean;
  stderr?: boolean;
  workingDir?: string;
  user?: string;
  signal?: AbortSignal;
}

/** A running exec or attach. */
export interface StreamHandle {
  /** Output in order; ends when the process (or the attach) ends. */
  readonly output: ReadableStream<OutputChunk>;
  /** Resizes the terminal (tty only). */
  resize(cols: number, rows: number): Promise<void>;
  /** Resolves with the exit code (exec) once the process has ended; attach: the container's. */
  readonly exitCode: Promise<number>;
  /** Stops streaming (does not kill the process). */
  close(): void;
}

/**
 * One reading of a running container's resource usage (cgroup counters as the
 * engine reports them). Numbers are JavaScript numbers: exact up to 2^53, so a
 * cumulative CPU time loses nanosecond precision only after about 104
 * core-days, which no consumer of these figures can notice.
 */
export interface ContainerStats {
  /** When the engine read the counters, unix milliseconds. */
  timeMs: number;
  /** Cumulative CPU time over all cores since the container started, nanoseconds. */
  cpuUsageCoreNanoseconds: number;
  /** Memory charged to the container, bytes (dockerd: page cache included; see below). */
  memoryUsageBytes: number;
  /**
   * Usage minus inactive file pages, bytes: the kubelet's and cadvisor's
   * "working set", never more than `memoryUsageBytes`. Podman's compatible
   * API gives no breakdown, so there both are the same number: on cgroup v2
   * Podman already leaves inactive file pages out of its usage, on cgroup v1
   * (Podman 4) it does not, and the working set then includes page cache.
   */
  memoryWorkingSetBytes: number;
  /** Anonymous memory (cgroup v1 `total_rss`, v2 `anon`), bytes; undefined when not reported. */
  memoryRssBytes?: number;
}

/** What arhat needs from a container engine. */
export interface ContainerRuntime {
  /** Engine name and version, e.g. { name: "docker", version: "20.10.24" }. */
  version(): Promise<{ name: string; version: string; apiVersion: string }>;
  /** Image by reference or id, or undefined when absent. */
  inspectImage(ref: string): Promise<ImageInfo | undefined>;
  listImages(): Promise<ImageInfo[]>;
  /**
   * Pulls `ref` with `credentials` (when given). Rejects with
   * UnauthenticatedError when the registry refuses the credentials and
   * NotFoundError when the image does not exist; the message names the image.
   */
  pullImage(ref: string, credentials?: RegistryCredentials): Promise<ImageInfo>;
  removeImage(ref: string): Promise<void>;

  /**
   * Creates the named volume unless it exists; with `tmpfsSizeBytes` (0: the
   * kernel's default size) it lives in memory (a tmpfs, mode 0777). Idempotent.
   */
  ensureVolume(
    name: string,
    opts: { labels: Record<string, string>; tmpfsSizeBytes?: number },
  ): Promise<void>;
  /** Removes every volume whose labels include all of `labels`; none is not an error. */
  removeVolumes(labels: Record<string, string>): Promise<void>;

  /** Creates a container; resolves with its id. AlreadyExistsError when the name is taken. */
  createContainer(spec: ContainerSpec): Promise<string>;
  startContainer(id: string): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceSeconds`; a stopped container is not an error. */
  stopContainer(id: string, graceSeconds: number): Promise<void>;
  /** Removes a container (force); a missing one is not an error. */
  removeContainer(id: string): Promise<void>;
  /** Container by id or name, or undefined when absent. */
  inspectContainer(idOrName: string): Promise<ContainerInfo | undefined>;
  /** Containers (running or not) whose labels include all of `labels`. */
  listContainers(labels?: Record<string, string>): Promise<ContainerInfo[]>;
  /** Resolves with the exit code once the container has stopped. */
  waitContainer(id: string, signal?: AbortSignal): Promise<number>;
  /** Output of a container (demultiplexed), in order. */
  logs(id: string, opts: LogOptions): ReadableStream<OutputChunk>;
  /** Runs a command in a running container. */
  exec(id: string, opts: ExecOptions): Promise<StreamHandle>;
  /** Attaches to a running container's main process. */
  attach(
    id: string,
    opts: { stdin?: ReadableStream<Uint8Array>; tty?: boolean; signal?: AbortSignal },
  ): Promise<StreamHandle>;
  /** Resizes a container's tty. */
  resizeContainer(id: string, cols: number, rows: number): Promise<void>;
  /**
   * One reading of a running container's CPU and memory use, without waiting
   * for a second sample (rates are the caller's business). Rejects with
   * NotFoundError when the container does not exist and InvalidInputError
   * when it is not running (a stopped container has no counters).
   */
  stats(id: string): Promise<ContainerStats>;
}
