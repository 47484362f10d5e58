/**
 * Pod start as a user sees it: a Pod created through the API server (POST,
 * `nodeName` set, so no scheduler), timed until a watch on the namespace's
 * pods delivers it with `status.phase: Running`. The watch starts from the
 * resourceVersion of a LIST made before the first create, so no event is
 * missed, and it is opened again from the last resourceVersion when the
 * server ends it. Pods are started one at a time, the sides taking turns
 * (aranya's pod i, then the kubelet's pod i), so a disturbance of the shared
 * machine falls on both; every wait is bounded.
 */
import { errorMessage } from "@aranya/common/errors";
import type { KubeHttp } from "@aranya/aranya/kube/kube_http";
import { placed, type Placement, type Side } from "./peer_node.ts";

/** The label every pod of this bench carries (its value: the run's id). */
export const POD_START_LABEL = "bench.aranya.arhat.dev/pod-start";

interface PodLike {
  metadata: { name: string; resourceVersion?: string };
  status?: { phase?: string };
}

/** A watch on one namespace's pods of one label value; records when each is first seen Running. */
export class RunningWatch {
  readonly #seen = new Map<string, number>();
  readonly #waiters = new Map<string, () => void>();
  readonly #abort = new AbortController();
  #failed?: Error;
  #loop?: Promise<void>;

  constructor(
    private readonly api: KubeHttp,
    private readonly ns: string,
    private readonly selector: string,
  ) {}

  /** Lists (for the resourceVersion) and starts watching from there. */
  async start(): Promise<void> {
    const list = await this.api.request<{ metadata: { resourceVersion: string } }>({
      method: "GET",
      path: `/api/v1/namespaces/${this.ns}/pods`,
      query: { labelSelector: this.selector },
      signal: AbortSignal.timeout(30_000),
    });
    this.#loop = this.#run(list.metadata.resourceVersion);
  }

  async #run(rv: string): Promise<void> {
    const signal = this.#abort.signal;
    try {
      while (!signal.aborted) {
        for await (
          const ev of this.api.watch<PodLike>(
            `/api/v1/namespaces/${this.ns}/pods`,
            { labelSelector: this.selector, resourceVersion: rv, allowWatchBookmarks: true },
            signal,
          )
        ) {
          const at = performance.now();
          if (ev.type === "ERROR") throw new Error(`Watch error: ${JSON.stringify(ev.object)}`);
          rv = ev.object.metadata.resourceVersion ?? rv;
          const name = ev.object.metadata.name;
          if (ev.type !== "DELETED" && ev.object.status?.phase === "Running") {
            if (!this.#seen.has(name)) this.#seen.set(name, at);
            this.#waiters.get(name)?.();
          }
        }
      }
    } catch (err) {
      this.#failed = err instanceof Error ? err : new Error(String(err));
      for (const w of this.#waiters.values()) w();
    }
  }

  /** The `performance.now()` at which `name` was first seen Running; throws after `timeoutMs`. */
  async running(name: string, timeoutMs: number): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        const check = () => {
          if (this.#seen.has(name)) resolve();
          else if (this.#failed) reject(this.#failed);
        };
        this.#waiters.set(name, check);
        timer = setTimeout(
          () => reject(new Error(`Pod "${name}" was not seen Running within ${timeoutMs} ms`)),
          timeoutMs,
        );
        check();
      });
      return this.#seen.get(name)!;
    } finally {
      clearTimeout(timer);
      this.#waiters.delete(name);
    }
  }

  /** Ends the watch. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}

/** The pod of this bench: one container idling, same on both sides but for its placement. */
export function podStartPod(
  name: string,
  image: string,
  runId: string,
  p: Placement,
): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { [POD_START_LABEL]: runId } },
    spec: placed({
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 1,
      containers: [{
        name: "main",
        image,
        imagePullPolicy: "IfNotPresent",
        command: ["sh", "-c", "while true; do sleep 3600; done"],
      }],
    }, p),
  };
}

/** Pod `name`'s status as JSON (for an error message), or why it could not be read. */
async function podStatus(o: PodStartOptions, name: string): Promise<string> {
  try {
    const p = await o.api.request<{ status?: unknown }>({
      method: "GET",
      path: `/api/v1/namespaces/${o.ns}/pods/${name}`,
      signal: AbortSignal.timeout(10_000),
    });
    return JSON.stringify(p.status).slice(0, 1500);
  } catch (err) {
    return `unreadable (${errorMessage(err)})`;
  }
}

/** Options of {@link podStarts}. */
export interface PodStartOptions {
  api: KubeHttp;
  ns: string;
  image: string;
  sides: Placement[];
  /** Pods per side. */
  count: number;
  /** Longest wait for one pod, ms. */
  timeoutMs: number;
  /** Called once every side has `n` pods Running (after pod n-1 of each); e.g. to sample memory. */
  onRunning?: (n: number) => Promise<void>;
  say: (line: string) => void;
}

/** Starts `count` pods per side, in turns; resolves with each side's create -> Running ms. */
export async function podStarts(o: PodStartOptions): Promise<Record<Side, number[]>> {
  const runId = crypto.randomUUID().slice(0, 8);
  const watch = new RunningWatch(o.api, o.ns, `${POD_START_LABEL}=${runId}`);
  await watch.start();
  const out: Record<Side, number[]> = { aranya: [], kubelet: [] };
  try {
    for (let i = 0; i < o.count; i++) {
      for (const p of o.sides) {
        const name = `start-${p.side}-${i}`;
        const t0 = performance.now();
        await o.api.request({
          method: "POST",
          path: `/api/v1/namespaces/${o.ns}/pods`,
          body: podStartPod(name, o.image, runId, p),
          signal: AbortSignal.timeout(30_000),
        });
        const at = await watch.running(name, o.timeoutMs).catch(async (err) => {
          throw new Error(`${errorMessage(err)}; its status: ${await podStatus(o, name)}`);
        });
        const ms = at - t0;
        out[p.side].push(ms);
      }
      if (o.onRunning) await o.onRunning(i + 1);
      if ((i + 1) % 5 === 0 || i + 1 === o.count) o.say(`pod start: ${i + 1}/${o.count} per side`);
    }
  } finally {
    await watch.stop();
  }
  return out;
}
