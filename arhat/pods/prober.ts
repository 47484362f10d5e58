/**
 * Startup, liveness and readiness probes of running containers, run on the
 * device so they keep working while the link is down, with the kubelet's
 * semantics:
 *
 * - every probe waits `initialDelaySeconds` after the container started, then
 *   runs every `periodSeconds`, each attempt limited to `timeoutSeconds`;
 * - the startup probe runs first; liveness and readiness start only once it
 *   succeeded (a container without one is started at once); `failureThreshold`
 *   failures in a row of the startup or liveness probe ask for the container
 *   to be restarted (`onFailure`), and its workers stop;
 * - readiness starts false and turns true after `successThreshold` successes in
 *   a row, false again after `failureThreshold` failures in a row; without a
 *   readiness probe a started container is ready.
 *
 * Only changes leave this module (`onChange`, `onFailure`): a probe that keeps
 * giving the same answer costs no link traffic. Workers belong to one
 * container instance (engine id); a restarted container gets new ones.
 */
import type { Logger } from "@aranya/common/log";
import { nullLogger } from "@aranya/common/log";
import type { ContainerSpec as WireContainer, Probe } from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerRuntime } from "../runtime/runtime.ts";
import { sleep } from "@aranya/common/backoff";
import { runAction } from "./actions.ts";

/** Which probe. */
export type ProbeKind = "startup" | "liveness" | "readiness";

/** What probes say about one container instance. */
export interface ProbeState {
  /** The startup probe succeeded, or there is none. */
  started: boolean;
  /** Started, and the readiness probe passes (or there is none). */
  ready: boolean;
}

/** A startup or liveness probe gave up on a container. */
export interface ProbeFailure {
  podUid: string;
  container: string;
  containerId: string;
  kind: "startup" | "liveness";
  message: string;
  /** The probe's terminationGracePeriodSeconds, when it sets one. */
  graceSeconds?: number;
}

/** Options for {@link Prober}. */
export interface ProberOptions {
  runtime: ContainerRuntime;
  /** A container's started/ready state changed (never called for the same state twice). */
  onChange: (podUid: string) => void;
  /** A startup or liveness probe failed `failureThreshold` times in a row. */
  onFailure: (f: ProbeFailure) => void;
  /**
   * The address network probes of pod `podUid` dial, asked again while a
   * target's `address` is "" (the engine may not have reported the pod's
   * network yet when the container was first tracked). Undefined: none yet.
   */
  addressOf?: (podUid: string) => Promise<string | undefined>;
  log?: Logger;
}

/** What one container's workers need. */
export interface ProbeTarget {
  podUid: string;
  container: WireContainer;
  containerId: string;
  /** Address network probes dial (the pod IP, or 127.0.0.1 with hostNetwork); "" when none. */
  address: string;
  /** When the container started, unix ms. */
  startedAtMs: number;
}

interface Tracked {
  podUid: string;
  state: ProbeState;
  abort: AbortController;
  startedGate: PromiseWithResolvers<void>;
}

/** The kubelet's defaults for fields left at zero. */
export function probeTiming(p: Probe, kind: ProbeKind): {
  initialDelayMs: number;
  periodMs: number;
  timeoutMs: number;
  successThreshold: number;
  failureThreshold: number;
} {
  return {
    initialDelayMs: p.initialDelaySeconds * 1000,
    periodMs: (p.periodSeconds || 10) * 1000,
    timeoutMs: (p.timeoutSeconds || 1) * 1000,
    // Liveness and startup must use 1 (the API server enforces it).
    successThreshold: kind === "readiness" ? p.successThreshold || 1 : 1,
    failureThreshold: p.failureThreshold || 3,
  };
}

/** Runs the probes of the device's running containers. */
export class Prober {
  readonly #o: ProberOptions;
  readonly #log: Logger;
  readonly #tracked = new Map<string, Tracked>();

  constructor(opts: ProberOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
  }

  /**
   * Starts the workers of a running container instance; calling it again for
   * the same instance does nothing. Returns immediately.
   */
  track(t: ProbeTarget): void {
    if (this.#tracked.has(t.containerId)) return;
    const c = t.container;
    const state: ProbeState = { started: !c.startupProbe, ready: false };
    state.ready = state.started && !c.readinessProbe;
    const tracked: Tracked = {
      podUid: t.podUid,
      state,
      abort: new AbortController(),
      startedGate: Promise.withResolvers<void>(),
    };
    if (state.started) tracked.startedGate.resolve();
    this.#tracked.set(t.containerId, tracked);
    if (c.startupProbe) this.#work(t, tracked, "startup", c.startupProbe);
    if (c.livenessProbe) this.#work(t, tracked, "liveness", c.livenessProbe);
    if (c.readinessProbe) this.#work(t, tracked, "readiness", c.readinessProbe);
  }

  /** The probe state of a container instance, or undefined when it is not tracked. */
  state(containerId: string): ProbeState | undefined {
    return this.#tracked.get(containerId)?.state;
  }

  /** Stops the workers of containers of `podUid` whose id is not in `keep` (all without it). */
  forget(podUid: string, keep: Set<string> = new Set()): void {
    for (const [id, t] of this.#tracked) {
      if (t.podUid === podUid && !keep.has(id)) this.#stop(id, t);
    }
  }

  /** Stops every worker. */
  close(): void {
    for (const [id, t] of this.#tracked) this.#stop(id, t);
  }

  #stop(id: string, t: Tracked): void {
    t.abort.abort();
    t.startedGate.resolve();
    this.#tracked.delete(id);
  }

  #work(target: ProbeTarget, t: Tracked, kind: ProbeKind, probe: Probe): void {
    this.#loop(target, t, kind, probe).catch((err) =>
      this.#log.warn("probe worker failed", {
        container: target.container.name,
        kind,
        error: String(err),
      })
    );
  }

  async #loop(target: ProbeTarget, t: Tracked, kind: ProbeKind, probe: Probe): Promise<void> {
    const signal = t.abort.signal;
    const timing = probeTiming(probe, kind);
    const wait = (ms: number) => sleep(ms, signal).catch(() => {}); // canceled: the loop ends
    await wait(Math.max(0, target.startedAtMs + timing.initialDelayMs - Date.now()));
    if (kind !== "startup") await t.startedGate.promise;
    if (signal.aborted) return;
    let successes = 0;
    let failures = 0;
    while (!signal.aborted) {
      if (!target.address && this.#o.addressOf) {
        target.address = await this.#o.addressOf(target.podUid).catch(() => undefined) ?? "";
      }
      const r = await runAction(
        { runtime: this.#o.runtime, containerId: target.containerId, address: target.address },
        probe.action,
        timing.timeoutMs,
        signal,
      );
      if (signal.aborted) return;
      if (r.ok) {
        successes++;
        failures = 0;
      } else {
        failures++;
        successes = 0;
        this.#log.debug("probe failed", {
          pod: target.podUid,
          container: target.container.name,
          kind,
          message: r.message,
        });
      }
      if (kind === "readiness") {
        const ready = t.state.ready
          ? failures < timing.failureThreshold
          : successes >= timing.successThreshold;
        if (ready !== t.state.ready) {
          t.state.ready = ready;
          this.#log.debug("readiness changed", {
            pod: target.podUid,
            container: target.container.name,
            ready,
          });
          this.#o.onChange(target.podUid);
        }
      } else if (kind === "startup" && successes >= timing.successThreshold) {
        t.state.started = true;
        t.state.ready = !target.container.readinessProbe;
        t.startedGate.resolve();
        this.#o.onChange(target.podUid);
        return;
      } else if (failures >= timing.failureThreshold) {
        this.#log.info("probe failed; the container will be restarted", {
          pod: target.podUid,
          container: target.container.name,
          kind,
          message: r.message,
        });
        this.#o.onFailure({
          podUid: target.podUid,
          container: target.container.name,
          containerId: target.containerId,
          kind,
          message: r.message,
          graceSeconds: probe.hasTerminationGracePeriodSeconds
            ? Number(probe.terminationGracePeriodSeconds)
            : undefined,
        });
        return;
      }
      await wait(timing.periodMs);
    }
  }
}
