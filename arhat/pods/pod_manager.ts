/**
 * Runs pods on a ContainerRuntime the way a kubelet would, on one device:
 *
 * - an infra container holds the pod's network (and IPC) namespace; app and
 *   init containers join it with `container:<infra id>`;
 * - init containers run to completion, in order, before app containers start;
 * - the restart policy (Always, OnFailure, Never) is enforced here, with
 *   exponential back-off per container; a restart creates a new container
 *   (restart count + 1 in its labels) and keeps the previous one for
 *   `logs --previous`;
 * - every container carries labels (pod namespace/name/uid, container name,
 *   role, spec hash, restart count), so the pod list is rebuilt from the
 *   runtime alone and nothing is ever created twice;
 * - a changed spec (spec hash) means delete + create;
 * - the pod's network is the engine's default network ("bridge": Podman's
 *   default network, Docker's bridge) unless configured otherwise; the pod IP
 *   is the infra container's address, filled into env variables that ask for
 *   it; hostPorts are published on the infra container;
 * - probes run on the device (`Prober`); a failed liveness or startup probe
 *   stops the container, which is then restarted by the restart policy with
 *   the back-off (reported as CrashLoopBackOff while it waits);
 * - postStart runs right after a container started (a failure kills it),
 *   preStop before it is stopped, within the grace period;
 * - each instance gets its termination-message file; every app and init
 *   container the pod's kubelet-managed /etc/hosts (hosts_file.ts).
 *
 * Work happens in short, non-blocking sync passes: `ensure` records the
 * desired pod and runs one pass; `run` repeats passes for every desired pod and
 * reports status changes through `onStatus`.
 */
import { Backoff, type BackoffOptions, sleep } from "@aranya/common/backoff";
import { errorMessage, InvalidInputError, isKind, NotFoundError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { readySignal } from "@aranya/common/lifecycle";
import {
  type ContainerSpec as WireContainer,
  type PodEnsureCmd,
  PodStatusMsg_Phase,
  PullPolicy,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import type {
  ContainerInfo,
  ContainerRuntime,
  ContainerSpec,
  Mount,
  RegistryCredentials,
} from "../runtime/runtime.ts";
import {
  containerName,
  type ContainerRole,
  INFRA_CONTAINER,
  LABEL_CONTAINER,
  LABEL_MANAGED,
  LABEL_POD_NAME,
  LABEL_POD_NAMESPACE,
  LABEL_POD_UID,
  LABEL_RESTART_COUNT,
  LABEL_ROLE,
  LABEL_SPEC_HASH,
} from "./labels.ts";
import { computePodStatus, hasEnded, latestByContainer, type PodStatusInit } from "./pod_status.ts";
import { ensureSubPath, removePodDir, writeVolumes } from "./volumes.ts";
import { podResolvConf, writeResolvConf } from "./resolv_conf.ts";
import { writeHostsFile } from "./hosts_file.ts";
import { runAction } from "./actions.ts";
import { type ProbeFailure, Prober } from "./prober.ts";
import {
  createTerminationMessageFile,
  DEFAULT_TERMINATION_MESSAGE_PATH,
  readTerminationMessage,
  terminationMessageFile,
} from "./termination_message.ts";

/** Where desired pods are kept across restarts (the journal). */
export interface DesiredPodStore {
  save(uid: string, cmd: PodEnsureCmd): Promise<void>;
  remove(uid: string): Promise<void>;
}

/** Options for {@link PodManager}. */
export interface PodManagerOptions {
  runtime: ContainerRuntime;
  stateDir: string;
  /** Image of the infra container (must provide `sh` and `sleep`, or set infraCommand). */
  infraImage: string;
  /** Command of the infra container (default: sleep until SIGTERM). */
  infraCommand?: string[];
  /**
   * Network of pods without hostNetwork: "bridge" (the default: the engine's
   * default network), a named network, or "none".
   */
  podNetwork?: string;
  /** Back-off between restarts of one container (default 10 s doubling to 5 min, like the kubelet). */
  restartBackoff?: BackoffOptions;
  /** Time between sync passes, ms (default 1000). */
  syncIntervalMs?: number;
  store?: DesiredPodStore;
  /** Called when a pod's status changed (never for identical statuses). */
  onStatus?: (status: PodStatusInit) => void;
  log?: Logger;
}

interface Desired {
  cmd: PodEnsureCmd;
  backoff: Map<string, { backoff: Backoff; notBefore: number; delayMs: number }>;
  waiting: Map<string, { reason: string; message: string }>;
  /** Termination messages of ended instances, by engine id (they never change). */
  messages: Map<string, string>;
  /** Why the engine could not start an instance, by engine id. */
  startFailures: Map<string, string>;
  /** When the pod's infra container may be tried again after it failed. */
  infraRetry: { backoff: Backoff; notBefore: number };
  /** Ephemeral container -> the engine id of the container whose processes it sees. */
  pidTargets: Map<string, string>;
  /** Images whose last pull failed, and when the next may be tried. */
  pullBackoff: Map<string, { backoff: Backoff; notBefore: number }>;
  failed: boolean;
  lastStatus?: string;
}

/** How long a postStart hook may run before the container is killed. */
const POST_START_TIMEOUT_MS = 120_000;

const SLEEP_FOREVER = [
  "sh",
  "-c",
  "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
];

/** The device's pods. */
export class PodManager {
  readonly #o: PodManagerOptions;
  readonly #log: Logger;
  readonly #desired = new Map<string, Desired>();
  readonly #busy = new Map<string, Promise<void>>();
  readonly #ready = readySignal();
  readonly #prober: Prober;

  constructor(opts: PodManagerOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
    this.#prober = new Prober({
      runtime: opts.runtime,
      log: this.#log,
      onChange: (uid) => this.#reportSoon(uid),
      onFailure: (f) => this.#probeFailed(f),
      addressOf: (uid) => this.addressOf(uid),
    });
  }

  /** Resolves once the supervision loop runs. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Uids of the pods the device should run. */
  get desiredUids(): string[] {
    return [...this.#desired.keys()];
  }

  /** Adopts desired pods loaded from the journal (offline start); runs nothing yet. */
  adopt(cmds: PodEnsureCmd[]): void {
    for (const cmd of cmds) this.#desired.set(cmd.uid, this.#newDesired(cmd));
  }

  /** Records `cmd` as desired (journaled), runs a sync pass, returns the pod's status. */
  async ensure(cmd: PodEnsureCmd): Promise<PodStatusInit> {
    const current = this.#desired.get(cmd.uid);
    if (!current || current.cmd.specHash !== cmd.specHash) {
      this.#desired.set(cmd.uid, this.#newDesired(cmd));
    } else {
      current.cmd = cmd;
    }
    await this.#o.store?.save(cmd.uid, cmd);
    // A pass with this command, after the one that may be running (which read the old one:
    // returning when it ends would tell aranya of volumes the device has not written yet).
    await this.#exclusive(cmd.uid, () => this.#sync(cmd.uid));
    return await this.status(cmd.uid);
  }

  /**
   * Stops (SIGTERM, then SIGKILL after `graceSeconds`) and removes the pod's
   * containers and files, and forgets it. Deleting an unknown pod is fine.
   */
  async delete(uid: string, graceSeconds: number): Promise<PodStatusInit> {
    const d = this.#desired.get(uid);
    this.#desired.delete(uid);
    await this.#o.store?.remove(uid);
    await this.#busy.get(uid)?.catch(() => {});
    const containers = await this.#containersOf(uid);
    const before = computePodStatus(containers);
    this.#prober.forget(uid);
    const grace = Math.max(0, graceSeconds);
    const apps = containers.filter((c) => c.labels[LABEL_ROLE] !== "infra");
    await Promise.all(apps.map((c) => this.#stop(d?.cmd, c, grace)));
    // The containers' ends (exit codes, times) as the kubelet reports a deleted pod's.
    const after = apps.length
      ? computePodStatus(await this.#containersOf(uid).catch(() => containers))
      : before;
    for (const c of containers.filter((c) => c.labels[LABEL_ROLE] === "infra")) {
      await this.#o.runtime.stopContainer(c.id, 1).catch(() => {});
    }
    await this.#removeAll(containers);
    await this.#o.runtime.removeVolumes({ [LABEL_POD_UID]: uid }).catch((err) =>
      this.#log.warn("removing the pod's volumes failed", { uid, error: errorMessage(err) })
    );
    await removePodDir(this.#o.stateDir, uid);
    const status: PodStatusInit = {
      ...after,
      uid,
      namespace: d?.cmd.namespace ?? before.namespace,
      name: d?.cmd.name ?? before.name,
      phase: PodStatusMsg_Phase.DELETED,
    };
    this.#o.onStatus?.(status);
    return status;
  }

  /** Status of one pod, from the runtime (plus its desired spec, if any). */
  async status(uid: string): Promise<PodStatusInit> {
    const d = this.#desired.get(uid);
    const containers = await this.#containersOf(uid);
    const s = computePodStatus(containers, d ? await this.#intent(d, containers) : undefined);
    if (d) {
      s.uid = uid;
      s.namespace = d.cmd.namespace;
      s.name = d.cmd.name;
      s.specHash = d.cmd.specHash;
      if (d.failed) s.phase = PodStatusMsg_Phase.FAILED;
    }
    return s;
  }

  /**
   * The engine container behind `container` of pod `uid`: its newest instance,
   * or with `previous` the one before it (for `logs --previous`). Throws
   * NotFoundError naming what is missing.
   */
  async findContainer(
    uid: string,
    container: string,
    opts: { previous?: boolean } = {},
  ): Promise<ContainerInfo> {
    const all = (await this.#containersOf(uid)).filter((c) =>
      c.labels[LABEL_CONTAINER] === container
    );
    if (all.length === 0) {
      throw new NotFoundError(
        `Container "${container}" of pod "${uid}" does not exist on this device`,
      );
    }
    all.sort((a, b) =>
      Number(b.labels[LABEL_RESTART_COUNT] ?? 0) - Number(a.labels[LABEL_RESTART_COUNT] ?? 0)
    );
    const pick = opts.previous ? all[1] : all[0];
    if (!pick) {
      throw new NotFoundError(
        `Container "${container}" of pod "${uid}" has no previous instance (it never restarted)`,
      );
    }
    return pick;
  }

  /** The pod's infra container (holds its network namespace). */
  async infraOf(uid: string): Promise<ContainerInfo> {
    const infra = (await this.#containersOf(uid)).find((c) => c.labels[LABEL_ROLE] === "infra");
    if (!infra) throw new NotFoundError(`Pod "${uid}" is not running on this device`);
    return infra;
  }

  /**
   * The address that reaches pod `uid`'s network from the device itself: 127.0.0.1 for a
   * hostNetwork pod, its IP on the engine's network otherwise; undefined when it has none
   * (network "none", or a pod found in the engine but no longer desired).
   *
   * @throws NotFoundError when the pod has no infra container on this device.
   */
  async addressOf(uid: string): Promise<string | undefined> {
    const infra = await this.infraOf(uid);
    const cmd = this.#desired.get(uid)?.cmd;
    return (cmd && this.#address(cmd, infra)) || undefined;
  }

  /** Every pod found in the runtime or desired, optionally only `uids`. */
  async list(uids?: string[]): Promise<PodStatusInit[]> {
    const all = await this.#o.runtime.listContainers({ [LABEL_MANAGED]: "true" });
    const found = new Set(all.map((c) => c.labels[LABEL_POD_UID]!).filter(Boolean));
    for (const uid of this.#desired.keys()) found.add(uid);
    const wanted = uids?.length ? [...found].filter((u) => uids.includes(u)) : [...found];
    return await Promise.all(wanted.map((u) => this.status(u)));
  }

  /** Supervises desired pods until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const interval = this.#o.syncIntervalMs ?? 1000;
    this.#ready.resolve();
    while (!signal.aborted) {
      // Pods are synced side by side and the loop waits for none of them: one pod's slow hook,
      // pull or stop never holds up the others' passes (their volume updates, restarts and
      // status); a pod still in its previous pass is left to finish it.
      for (const uid of [...this.#desired.keys()]) {
        if (this.#busy.has(uid)) continue;
        this.#syncOne(uid).catch((err) =>
          this.#log.warn("pod sync failed", { uid, error: errorMessage(err) })
        );
      }
      // sleep() removes its abort listener when the time is up: one added per pass and never
      // removed would pile up on the long-lived signal for as long as arhat runs.
      await sleep(interval, signal).catch(() => {});
    }
    await Promise.allSettled([...this.#busy.values()]);
    this.#prober.close();
  }

  /** Removes containers, the infra container last (Podman refuses to remove a joined one). */
  async #removeAll(containers: ContainerInfo[]): Promise<void> {
    const infra = containers.filter((c) => c.labels[LABEL_ROLE] === "infra");
    const others = containers.filter((c) => c.labels[LABEL_ROLE] !== "infra");
    await Promise.all(others.map((c) => this.#o.runtime.removeContainer(c.id)));
    for (const c of infra) await this.#o.runtime.removeContainer(c.id);
  }

  #newDesired(cmd: PodEnsureCmd): Desired {
    return {
      cmd,
      backoff: new Map(),
      waiting: new Map(),
      messages: new Map(),
      startFailures: new Map(),
      pullBackoff: new Map(),
      pidTargets: new Map(),
      infraRetry: {
        backoff: new Backoff({ initialMs: 1000, maxMs: 60_000, factor: 2 }),
        notBefore: 0,
      },
      failed: false,
    };
  }

  async #intent(d: Desired, containers: ContainerInfo[]) {
    const now = Date.now();
    const backoff = new Map<string, { delayMs: number }>();
    for (const [name, b] of d.backoff) if (b.notBefore > now) backoff.set(name, b);
    // Messages of instances that ended (read once: an ended instance's file no longer changes).
    const live = new Set(containers.map((c) => c.id));
    for (const id of d.messages.keys()) if (!live.has(id)) d.messages.delete(id);
    for (const id of d.startFailures.keys()) if (!live.has(id)) d.startFailures.delete(id);
    for (const c of containers) {
      if (!hasEnded(c) || d.messages.has(c.id) || c.labels[LABEL_ROLE] === "infra") continue;
      const spec = this.#specOf(d.cmd, c.labels[LABEL_CONTAINER] ?? "");
      const message = await readTerminationMessage({
        runtime: this.#o.runtime,
        file: terminationMessageFile(
          this.#o.stateDir,
          d.cmd.uid,
          c.labels[LABEL_CONTAINER] ?? "",
          Number(c.labels[LABEL_RESTART_COUNT] ?? 0),
        ),
        container: c,
        fallbackToLogs: spec?.terminationMessageFallbackToLogs ?? false,
      });
      // An empty message from the logs may only mean the engine has not flushed them yet: it
      // is read again on the next status until the instance ended 5 s ago (a file's content is
      // final once the instance ended).
      const settled = Date.now() - (Date.parse(c.finishedAt) || 0) > 5000;
      if (message !== "" || !spec?.terminationMessageFallbackToLogs || settled) {
        d.messages.set(c.id, message);
      }
    }
    return {
      restartPolicy: d.cmd.restartPolicy || RestartPolicy.ALWAYS,
      initContainers: d.cmd.initContainers.map((c) => c.name),
      containers: d.cmd.containers.map((c) => c.name),
      ephemeralContainers: d.cmd.ephemeralContainers.map((c) => c.name),
      waiting: d.waiting,
      backoff,
      probes: (id: string) => this.#prober.state(id),
      terminationMessages: d.messages,

      pod: { namespace: d.cmd.namespace, name: d.cmd.name, uid: d.cmd.uid },
    };
  }

  #specOf(cmd: PodEnsureCmd | undefined, name: string): WireContainer | undefined {
    return cmd?.containers.find((c) => c.name === name) ??
      cmd?.initContainers.find((c) => c.name === name) ??
      cmd?.ephemeralContainers.find((c) => c.name === name);
  }

  /** Where network actions (probes, hooks) reach the pod. */
  #address(cmd: PodEnsureCmd, infra: ContainerInfo | undefined): string {
    return cmd.hostNetwork ? "127.0.0.1" : infra?.ipAddress ?? "";
  }

  /**
   * Stops one instance as the kubelet does: its preStop hook first (when the
   * pod's spec is known), then SIGTERM with what is left of the grace period
   * (at least 2 s after a hook), then SIGKILL. Never throws.
   */
  async #stop(cmd: PodEnsureCmd | undefined, c: ContainerInfo, graceSeconds: number) {
    const spec = this.#specOf(cmd, c.labels[LABEL_CONTAINER] ?? "");
    let grace = graceSeconds;
    if (cmd && spec?.preStop?.action.case && c.state === "running") {
      const started = Date.now();
      const infra = (await this.#containersOf(cmd.uid).catch(() => [])).find((x) =>
        x.labels[LABEL_ROLE] === "infra"
      );
      const r = await runAction(
        {
          runtime: this.#o.runtime,
          containerId: c.id,
          address: this.#address(cmd, infra),
        },
        spec.preStop.action,
        Math.max(1, graceSeconds) * 1000,
      );
      if (!r.ok) {
        this.#log.warn("preStop hook failed", {
          uid: cmd.uid,
          container: spec.name,
          error: r.message,
        });
      }
      grace = Math.max(2, graceSeconds - Math.floor((Date.now() - started) / 1000));
    }
    await this.#o.runtime.stopContainer(c.id, grace).catch(() => {});
  }

  /** A liveness or startup probe gave up: stop the instance; the next pass restarts it. */
  #probeFailed(f: ProbeFailure): void {
    const d = this.#desired.get(f.podUid);
    if (!d) return;
    const grace = f.graceSeconds ?? Number(d.cmd.terminationGraceSeconds || 30n);
    void this.#exclusive(f.podUid, async () => {
      const c = await this.#o.runtime.inspectContainer(f.containerId);
      if (c) await this.#stop(d.cmd, c, grace);
      this.#prober.forget(f.podUid, new Set());
      await this.#sync(f.podUid);
    }).catch((err) =>
      this.#log.warn("restarting after a failed probe failed", {
        uid: f.podUid,
        error: errorMessage(err),
      })
    );
  }

  /** Every container of the pod waits with the reason its sandbox could not be made. */
  #sandboxFailed(d: Desired, message: string): void {
    this.#log.warn("the pod's infra container failed", { uid: d.cmd.uid, error: message });
    for (const x of [...d.cmd.initContainers, ...d.cmd.containers]) {
      d.waiting.set(x.name, { reason: "CreateContainerError", message });
    }
  }

  /** Sends the pod's status if it changed (after a probe result changed). */
  #reportSoon(uid: string): void {
    const d = this.#desired.get(uid);
    if (!d) return;
    void this.#exclusive(uid, () => this.#report(d)).catch((err) =>
      this.#log.warn("reporting a pod status failed", { uid, error: errorMessage(err) })
    );
  }

  /** Runs `fn` after whatever runs for the pod now, and before the next pass. */
  #exclusive(uid: string, fn: () => Promise<void>): Promise<void> {
    const before = this.#busy.get(uid) ?? Promise.resolve();
    const p: Promise<void> = before.catch(() => {}).then(fn).finally(() => {
      if (this.#busy.get(uid) === p) this.#busy.delete(uid);
    });
    this.#busy.set(uid, p);
    return p;
  }

  async #containersOf(uid: string): Promise<ContainerInfo[]> {
    const all = await this.#o.runtime.listContainers({ [LABEL_POD_UID]: uid });
    const failed = this.#desired.get(uid)?.startFailures;
    if (!failed?.size) return all;
    // Podman keeps a container it could not start as plain "created", without the error:
    // the start's error, remembered here, tells it apart from one not started yet.
    return all.map((c) => {
      const error = failed.get(c.id);
      return error !== undefined && c.state === "created" && c.error === ""
        ? { ...c, error, exitCode: c.exitCode || 128 }
        : c;
    });
  }

  /** One pass for one pod, never two at once for the same pod. */
  #syncOne(uid: string): Promise<void> {
    const running = this.#busy.get(uid);
    if (running) return running;
    const p: Promise<void> = this.#sync(uid).finally(() => {
      if (this.#busy.get(uid) === p) this.#busy.delete(uid);
    });
    this.#busy.set(uid, p);
    return p;
  }

  async #sync(uid: string): Promise<void> {
    const d = this.#desired.get(uid);
    if (!d) return;
    const cmd = d.cmd;
    let containers = await this.#containersOf(uid);
    // A changed spec: delete + create.
    if (containers.some((c) => c.labels[LABEL_SPEC_HASH] !== cmd.specHash)) {
      this.#log.info("pod spec changed; recreating", { uid });
      const grace = Number(cmd.terminationGraceSeconds || 30n);
      this.#prober.forget(uid);
      await Promise.all(containers.map((c) => this.#stop(cmd, c, grace)));
      await this.#removeAll(containers);
      containers = [];
    }
    if (!d.failed) await this.#advance(d, containers);
    await this.#probe(d);
    await this.#report(d);
  }

  /** Probes run for the running app containers of the pod, and only for them. */
  async #probe(d: Desired): Promise<void> {
    const containers = await this.#containersOf(d.cmd.uid);
    const infra = containers.find((c) => c.labels[LABEL_ROLE] === "infra");
    const keep = new Set<string>();
    for (const [name, c] of latestByContainer(containers)) {
      const spec = d.cmd.containers.find((x) => x.name === name);
      if (!spec || c.state !== "running") continue;
      keep.add(c.id);
      this.#prober.track({
        podUid: d.cmd.uid,
        container: spec,
        containerId: c.id,
        address: this.#address(d.cmd, infra),
        startedAtMs: Date.parse(c.startedAt) || Date.now(),
      });
    }
    this.#prober.forget(d.cmd.uid, keep);
  }

  async #advance(d: Desired, existing: ContainerInfo[]): Promise<void> {
    const cmd = d.cmd;
    const policy = cmd.restartPolicy || RestartPolicy.ALWAYS;
    const volumes = await writeVolumes(this.#o.stateDir, cmd.uid, cmd.volumes, {
      fsGroup: cmd.hasFsGroup ? Number(cmd.fsGroup) : undefined,
    });
    for (const v of cmd.volumes) {
      if (v.source.case !== "memoryDir") continue;
      await this.#o.runtime.ensureVolume(memoryVolumeName(cmd.uid, v.name), {
        labels: { [LABEL_MANAGED]: "true", [LABEL_POD_UID]: cmd.uid },
        tmpfsSizeBytes: Number(v.source.value.sizeLimitBytes),
      });
    }
    await writeResolvConf(this.#o.stateDir, cmd);
    let infra = existing.find((c) => c.labels[LABEL_ROLE] === "infra");
    if (!infra) {
      if (Date.now() < d.infraRetry.notBefore) return;
      const id = await this.#create(cmd, undefined, "infra", 0, volumes, undefined);
      if (!id) {
        d.infraRetry.notBefore = Date.now() + d.infraRetry.backoff.next();
        return;
      }
      try {
        await this.#o.runtime.startContainer(id);
      } catch (err) {
        // The pod's sandbox cannot run (e.g. a sysctl the engine refuses at start): every
        // container says why, the infra container goes, and it is tried again with a back-off.
        this.#sandboxFailed(d, `Starting the pod's infra container failed: ${errorMessage(err)}`);
        await this.#o.runtime.removeContainer(id).catch(() => {});
        d.infraRetry.notBefore = Date.now() + d.infraRetry.backoff.next();
        return;
      }
      d.infraRetry.backoff.reset();
      infra = await this.#o.runtime.inspectContainer(id);
      if (!infra) return;
    } else if (infra.state !== "running") {
      // After a reboot or an engine restart: start the same infra container again, so the
      // app containers that joined its namespaces by id can join it again.
      await this.#o.runtime.startContainer(infra.id);
      infra = await this.#o.runtime.inspectContainer(infra.id) ?? infra;
    }
    const latest = latestByContainer(existing);
    for (const c of cmd.initContainers) {
      const cur = latest.get(c.name);
      if (cur?.state === "exited" && cur.exitCode === 0 && cur.error === "") continue;
      if (cur && !hasEnded(cur)) return; // still running
      if (cur && policy === RestartPolicy.NEVER) {
        d.failed = true;
        this.#log.warn("init container failed; pod failed", { uid: cmd.uid, container: c.name });
        return;
      }
      await this.#startInstance(d, c, "init", cur, infra, volumes);
      return;
    }
    for (const c of cmd.containers) {
      const cur = latest.get(c.name);
      if (cur && !hasEnded(cur) && cur.state !== "created") continue;
      if (cur?.state === "created") {
        // Created by a pass that did not get to start it.
        await this.#o.runtime.startContainer(cur.id).catch(() => {});
        continue;
      }
      if (cur) {
        const restart = policy === RestartPolicy.ALWAYS ||
          (policy === RestartPolicy.ON_FAILURE && (cur.exitCode !== 0 || cur.error !== ""));
        if (!restart) continue;
      }
      await this.#startInstance(d, c, "app", cur, infra, volumes);
    }
    // Ephemeral containers: each started once (kubectl debug), never restarted.
    for (const c of cmd.ephemeralContainers) {
      if (latest.has(c.name)) continue;
      const target = cmd.ephemeralTargets[c.name];
      d.pidTargets.set(c.name, target ? latest.get(target)?.id ?? "" : "");
      await this.#startInstance(d, c, "ephemeral", undefined, infra, volumes);
    }
  }

  /** Creates and starts the next instance of a container, honouring its back-off. */
  async #startInstance(
    d: Desired,
    c: WireContainer,
    role: ContainerRole,
    previous: ContainerInfo | undefined,
    infra: ContainerInfo,
    volumes: Map<string, string>,
  ): Promise<void> {
    let b = d.backoff.get(c.name);
    if (!b) {
      b = {
        backoff: new Backoff({
          initialMs: 10_000,
          maxMs: 300_000,
          factor: 2,
          ...this.#o.restartBackoff,
        }),
        notBefore: 0,
        delayMs: 0,
      };
      d.backoff.set(c.name, b);
    }
    if (previous && Date.now() < b.notBefore) return;
    // Like the kubelet: an instance that ran for 10 minutes clears the back-off.
    if (previous && Date.parse(previous.finishedAt) - Date.parse(previous.startedAt) > 600_000) {
      b.backoff.reset();
    }
    const restart = previous ? Number(previous.labels[LABEL_RESTART_COUNT] ?? 0) + 1 : 0;
    if (!await this.#pull(d, c)) return;
    const id = await this.#create(d.cmd, c, role, restart, volumes, infra);
    if (!id) return;
    let started = false;
    try {
      await this.#o.runtime.startContainer(id);
      d.waiting.delete(c.name);
      started = true;
    } catch (err) {
      // The engine keeps the instance with its error: it is reported as ContainerCannotRun and
      // restarted (with the back-off) like any container that ended.
      d.startFailures.set(id, errorMessage(err));
      this.#log.warn("starting a container failed", {
        uid: d.cmd.uid,
        container: c.name,
        error: errorMessage(err),
      });
      d.waiting.delete(c.name);
    }
    if (started && c.postStart?.action.case) {
      const r = await runAction(
        { runtime: this.#o.runtime, containerId: id, address: this.#address(d.cmd, infra) },
        c.postStart.action,
        POST_START_TIMEOUT_MS,
      );
      if (!r.ok) {
        this.#log.warn("postStart hook failed; killing the container", {
          uid: d.cmd.uid,
          container: c.name,
          error: r.message,
        });
        await this.#o.runtime.stopContainer(id, Number(d.cmd.terminationGraceSeconds || 30n))
          .catch(() => {});
      }
    }
    if (previous || !started) {
      b.delayMs = b.backoff.next();
      b.notBefore = Date.now() + b.delayMs;
      // Keep only the previous instance (for logs --previous).
      const all = await this.#containersOf(d.cmd.uid);
      for (const old of all) {
        if (
          old.labels[LABEL_CONTAINER] === c.name &&
          Number(old.labels[LABEL_RESTART_COUNT] ?? 0) < restart - 1
        ) await this.#o.runtime.removeContainer(old.id);
      }
    }
  }

  /** runAsNonRoot, checked as the kubelet checks it (CreateContainerConfigError when refused). */
  #admitUser(d: Desired, c: WireContainer, imageUser: string): boolean {
    if (!c.runAsNonRoot) return true;
    const uid = effectiveUid(c, imageUser);
    const refuse = (message: string) => {
      d.waiting.set(c.name, { reason: "CreateContainerConfigError", message });
      return false;
    };
    if (uid === undefined) {
      return refuse(
        `container has runAsNonRoot and image has non-numeric user (${imageUser}), cannot verify user is non-root (pod: "${d.cmd.name}_${d.cmd.namespace}(${d.cmd.uid})", container: ${c.name})`,
      );
    }
    if (uid === 0) {
      return refuse(
        `container has runAsNonRoot and image will run as root (pod: "${d.cmd.name}_${d.cmd.namespace}(${d.cmd.uid})", container: ${c.name})`,
      );
    }
    return true;
  }

  async #pull(d: Desired, c: WireContainer): Promise<boolean> {
    const policy = c.pullPolicy || PullPolicy.IF_NOT_PRESENT;
    const present = await this.#o.runtime.inspectImage(c.image);
    if (present && policy !== PullPolicy.ALWAYS) return this.#admitUser(d, c, present.user);
    const wait = d.pullBackoff.get(c.image);
    if (wait && Date.now() < wait.notBefore) {
      // Like the kubelet: no pull while the back-off after a failed one runs.
      d.waiting.set(c.name, {
        reason: "ImagePullBackOff",
        message: `Back-off pulling image "${c.image}"`,
      });
      return false;
    }
    if (!present && policy === PullPolicy.NEVER) {
      d.waiting.set(c.name, {
        reason: "ErrImageNeverPull",
        message: `Image "${c.image}" is not present and the pull policy is Never`,
      });
      return false;
    }
    try {
      const image = await this.#o.runtime.pullImage(c.image, credentialsFor(d.cmd, c.image));
      d.waiting.delete(c.name);
      d.pullBackoff.delete(c.image);
      return this.#admitUser(d, c, image.user);
    } catch (err) {
      d.waiting.set(c.name, { reason: "ErrImagePull", message: errorMessage(err) });
      const b = wait ?? {
        backoff: new Backoff({ initialMs: 10_000, maxMs: 300_000, factor: 2 }),
        notBefore: 0,
      };
      b.notBefore = Date.now() + b.backoff.next();
      d.pullBackoff.set(c.image, b);
      this.#log.warn("image pull failed", { image: c.image, error: errorMessage(err) });
      return false;
    }
  }

  async #create(
    pod: PodEnsureCmd,
    c: WireContainer | undefined,
    role: ContainerRole,
    restart: number,
    volumes: Map<string, string>,
    infra: ContainerInfo | undefined,
  ): Promise<string | undefined> {
    const name = c?.name ?? INFRA_CONTAINER;
    const infraId = infra?.id;
    const labels: Record<string, string> = {
      [LABEL_MANAGED]: "true",
      [LABEL_POD_UID]: pod.uid,
      [LABEL_POD_NAMESPACE]: pod.namespace,
      [LABEL_POD_NAME]: pod.name,
      [LABEL_CONTAINER]: name,
      [LABEL_ROLE]: role,
      [LABEL_SPEC_HASH]: pod.specHash,
      [LABEL_RESTART_COUNT]: String(restart),
    };
    let spec: ContainerSpec;
    if (!c) {
      spec = {
        name: containerName(pod, name, restart),
        image: this.#o.infraImage,
        cmd: this.#o.infraCommand ?? SLEEP_FOREVER,
        labels,
        network: pod.hostNetwork ? "host" : this.#o.podNetwork ?? "bridge",
        hostname: pod.hostNetwork ? undefined : pod.hostname || pod.name,
        dnsServers: pod.dnsServers,
        dnsSearches: pod.dnsSearches,
        dnsOptions: pod.dnsOptions,
        // Docker lets others join an IPC namespace only when it is "shareable".
        ipcMode: pod.hostIpc ? "host" : "shareable",
        ports: pod.containers.flatMap((k) =>
          k.ports.filter((p) => p.hostPort > 0).map((p) => ({
            containerPort: p.containerPort,
            hostPort: p.hostPort,
            protocol: (p.protocol.toLowerCase() === "udp" ? "udp" : "tcp") as "tcp" | "udp",
            hostIp: p.hostIp || undefined,
          }))
        ),
        sysctls: pod.sysctls,
        // The infra container holds every memory emptyDir for the pod's life: the engines mount
        // such a tmpfs volume when a first container using it starts and unmount it (losing its
        // files) when the last one stops, so a restarting container alone would find it empty.
        mounts: pod.volumes.filter((v) => v.source.case === "memoryDir").map((v) => ({
          hostPath: "",
          volume: memoryVolumeName(pod.uid, v.name),
          containerPath: `/.pod-memory/${v.name}`,
          readOnly: false,
        })),
        stopTimeoutSeconds: 1,
      };
    } else {
      const env = { ...c.env };
      // The pod IP is known only now: fill the variables that asked for it (fieldRef status.podIP).
      for (const n of c.podIpEnv) env[n] = infra?.ipAddress ?? "";
      const messageFile = terminationMessageFile(this.#o.stateDir, pod.uid, name, restart);
      await createTerminationMessageFile(messageFile);
      const hostsFile = await writeHostsFile(this.#o.stateDir, pod, infra?.ipAddress ?? "");
      // subPath sources exist before the engine sees them (made as the kubelet makes them).
      const subPaths = new Map<string, string>();
      for (const m of c.mounts) {
        const base = volumes.get(m.volume);
        if (m.subPath && base) {
          subPaths.set(`${m.volume}\0${m.subPath}`, await ensureSubPath(base, m.subPath));
        }
      }
      const groups = [
        ...(pod.hasFsGroup ? [pod.fsGroup] : []),
        ...c.supplementalGroups,
      ].map(String);
      spec = {
        name: containerName(pod, name, restart),
        image: c.image,
        entrypoint: c.command.length ? c.command : undefined,
        cmd: c.args.length ? c.args : undefined,
        env,
        workingDir: c.workingDir || undefined,
        labels,
        mounts: withResolvConf(
          c.mounts.map((m) => {
            const memory = pod.volumes.find((v) =>
              v.name === m.volume && v.source.case === "memoryDir"
            );
            if (memory) {
              if (m.subPath) {
                throw new InvalidInputError(
                  `Volume "${m.volume}" (emptyDir medium Memory) mounted by container "${name}" cannot take a subPath on edge devices`,
                );
              }
              return {
                hostPath: "",
                volume: memoryVolumeName(pod.uid, m.volume),
                containerPath: m.mountPath,
                readOnly: m.readOnly,
              };
            }
            if (m.subPath.startsWith("/") || m.subPath.split("/").includes("..")) {
              // aranya refuses these; a device never lets a mount step out of its volume.
              throw new InvalidInputError(
                `subPath "${m.subPath}" of container "${name}" must be relative and stay inside volume "${m.volume}"`,
              );
            }
            const base = volumes.get(m.volume);
            if (!base) {
              throw new InvalidInputError(
                `Volume "${m.volume}" mounted by container "${name}" is not defined in the pod`,
              );
            }
            return {
              hostPath: m.subPath ? subPaths.get(`${m.volume}\0${m.subPath}`) ?? base : base,
              containerPath: m.mountPath,
              readOnly: m.readOnly,
            };
          }),
          podResolvConf(this.#o.stateDir, pod),
          hostsFile,
        ).concat({
          hostPath: messageFile,
          containerPath: c.terminationMessagePath || DEFAULT_TERMINATION_MESSAGE_PATH,
        }),
        network: `container:${infraId}`,
        ipcMode: `container:${infraId}`,
        // The pod's hostname (Podman does not share it through the network namespace; dockerd
        // does, and takes this too); hostNetwork pods see the device's.
        utsMode: pod.hostNetwork ? "host" : `container:${infraId}`,
        pidMode: pod.hostPid
          ? "host"
          : role === "ephemeral" && this.#desired.get(pod.uid)?.pidTargets.get(name)
          ? `container:${this.#desired.get(pod.uid)?.pidTargets.get(name)}`
          : undefined,
        tty: c.tty,
        openStdin: c.stdin,
        stdinOnce: c.stdinOnce,
        privileged: c.privileged,
        user: c.hasRunAsUser
          ? c.hasRunAsGroup ? `${c.runAsUser}:${c.runAsGroup}` : String(c.runAsUser)
          : undefined,
        readOnlyRootfs: c.readOnlyRootFs,
        capAdd: c.capsAdd,
        capDrop: c.capsDrop,
        groupAdd: [...new Set(groups)],
        noNewPrivileges: c.noNewPrivileges,
        securityOpts: c.securityOpts,
        memoryLimitBytes: Number(c.memoryLimitBytes) || undefined,
        cpuLimitMillis: Number(c.cpuLimitMillis) || undefined,
        memoryReservationBytes: Number(c.memoryRequestBytes) || undefined,
        // The kubelet's shares: 1024 per CPU, at least 2.
        cpuShares: c.cpuRequestMillis
          ? Math.max(2, Math.floor(Number(c.cpuRequestMillis) * 1024 / 1000))
          : undefined,
        stopTimeoutSeconds: Number(pod.terminationGraceSeconds || 30n),
      };
    }
    try {
      return await this.#o.runtime.createContainer(spec);
    } catch (err) {
      if (isKind(err, "already-exists")) {
        // Another pass created it a moment ago: never a duplicate.
        return (await this.#o.runtime.inspectContainer(spec.name))?.id;
      }
      const d = this.#desired.get(pod.uid);
      if (c) {
        d?.waiting.set(name, { reason: "CreateContainerError", message: errorMessage(err) });
      } else {
        // No pod sandbox (e.g. a sysctl the engine refuses): every container says why.
        if (d) {
          this.#sandboxFailed(d, `Creating the pod's infra container failed: ${errorMessage(err)}`);
        }
      }
      this.#log.warn("creating a container failed", {
        uid: pod.uid,
        container: name,
        error: errorMessage(err),
      });
      return undefined;
    }
  }

  async #report(d: Desired): Promise<void> {
    const s = await this.status(d.cmd.uid);
    const key = JSON.stringify({
      ...s,
      containers: s.containers.map((c) => ({ ...c, createdAt: "" })),
    });
    if (key === d.lastStatus) return;
    d.lastStatus = key;
    this.#log.debug("pod status reported", {
      uid: d.cmd.uid,
      pod: `${d.cmd.namespace}/${d.cmd.name}`,
      phase: s.phase,
      ready: s.containers.map((c) => `${c.name}=${c.ready}`).join(","),
    });
    this.#o.onStatus?.(s);
  }
}

/** The engine volume holding a pod's in-memory emptyDir. */
export function memoryVolumeName(uid: string, volume: string): string {
  return `arhat-${uid.replaceAll("-", "").slice(0, 12)}-${volume}`;
}

/**
 * The user a container runs as, for runAsNonRoot: its runAsUser, else the
 * image's user; undefined when the image names a user only by name.
 */
export function effectiveUid(c: WireContainer, imageUser: string): number | undefined {
  if (c.hasRunAsUser) return Number(c.runAsUser);
  const user = imageUser.split(":")[0] ?? "";
  if (user === "" || user === "root") return 0;
  return /^[0-9]+$/.test(user) ? Number(user) : undefined;
}

/** The pull credentials for `image` from the pod's pull secrets (matched by registry host). */
export function credentialsFor(pod: PodEnsureCmd, image: string): RegistryCredentials | undefined {
  const spec = pod.imagePull[image];
  const host = registryHost(image);
  const auth = spec?.auth.find((a) => a.server === host) ?? spec?.auth[0] ??
    Object.values(pod.imagePull).flatMap((s) => s.auth).find((a) => a.server === host);
  if (!auth) return undefined;
  return {
    server: auth.server || host,
    username: auth.username || undefined,
    password: auth.password || undefined,
    identityToken: auth.identityToken || undefined,
    registryToken: auth.registryToken || undefined,
  };
}

/** Registry host of an image reference ("docker.io" when it names none). */
export function registryHost(image: string): string {
  const first = image.split("/")[0]!;
  return image.includes("/") &&
      (first.includes(".") || first.includes(":") || first === "localhost")
    ? first
    : "docker.io";
}

/**
 * `mounts` plus the pod's resolv.conf at /etc/resolv.conf (read-only) and its
 * hosts file at /etc/hosts, each unless a mount of the pod is already there.
 */
function withResolvConf(
  mounts: Mount[],
  resolvConf: string | undefined,
  hostsFile: string,
): Mount[] {
  const out = [...mounts];
  const taken = (path: string) => mounts.some((m) => m.containerPath === path);
  if (resolvConf && !taken("/etc/resolv.conf")) {
    out.push({ hostPath: resolvConf, containerPath: "/etc/resolv.conf", readOnly: true });
  }
  if (!taken("/etc/hosts")) out.push({ hostPath: hostsFile, containerPath: "/etc/hosts" });
  return out;
}
