/**
 * Follows the Nodes of one bench run through ONE watch (label
 * `arhat.dev/namespace=<ns>`): which exist, when each first turned Ready,
 * when each was deleted, and per Node its Ready state now and the kubelet port
 * it advertises (`status.daemonEndpoints.kubeletEndpoint.Port`, which names
 * the aranya replica serving it: each replica has its own port range);
 * `until` resolves at the event that makes a condition true, so times are the
 * watch's, not a poll interval's.
 */
import type { CoreV1Api, KubeConfig, V1Node } from "@kubernetes/client-node";
import { TimeoutError } from "@aranya/common/errors";
import { type ObjectWatch, watchObjects } from "./watch_objects.ts";

/** What the tracker knows. */
export interface NodeCounts {
  present: number;
  /** Nodes that turned Ready at least once. */
  readyOnce: number;
  /** Nodes Ready now. */
  readyNow: number;
  deleted: number;
}

/** One Node as last seen. */
export interface NodeState {
  ready: boolean;
  /** The kubelet port the Node advertises (undefined: none yet). */
  port: number | undefined;
  /** The Ready condition's reason (why a Node is not Ready). */
  reason?: string;
}

/** A condition of {@link NodeTracker.until}: the counts, and every present Node's state. */
export type NodePredicate = (c: NodeCounts, nodes: ReadonlyMap<string, NodeState>) => boolean;

interface Waiter {
  pred: NodePredicate;
  resolve: (at: number) => void;
}

/** Node watch for one run; see the module doc. */
export class NodeTracker {
  readonly #present = new Map<string, NodeState>();
  readonly #readyNow = new Set<string>();
  /** First Ready time (performance.now()) per node. */
  readonly readyAt = new Map<string, number>();
  /** Deletion time per node. */
  readonly deletedAt = new Map<string, number>();
  #waiters: Waiter[] = [];
  #watch?: ObjectWatch;
  /** Watch restarts after errors. */
  restarts = 0;

  constructor(
    readonly opts: {
      kubeconfig: KubeConfig;
      core: CoreV1Api;
      namespace: string;
      /** Called for every Node event that shows the Node exists. */
      onNode?: (name: string) => void;
    },
  ) {}

  /** Starts the watch; resolves once it runs. */
  async start(): Promise<void> {
    const labelSelector = `arhat.dev/namespace=${this.opts.namespace}`;
    this.#watch = await watchObjects<V1Node>({
      kubeconfig: this.opts.kubeconfig,
      path: "/api/v1/nodes",
      labelSelector,
      list: () => this.opts.core.listNode({ labelSelector }),
      onUpsert: (n) => this.#upsert(n),
      onDelete: (n) => this.#delete(n),
      onError: () => this.restarts++,
    });
  }

  async stop(): Promise<void> {
    await this.#watch?.stop();
  }

  /** The present Nodes' states (live; do not keep across events). */
  get nodes(): ReadonlyMap<string, NodeState> {
    return this.#present;
  }

  counts(): NodeCounts {
    return {
      present: this.#present.size,
      readyOnce: this.readyAt.size,
      readyNow: this.#readyNow.size,
      deleted: this.deletedAt.size,
    };
  }

  /**
   * Resolves with the time (performance.now()) of the event that made `pred`
   * true (now, if it already is); TimeoutError after `timeoutMs`, naming the
   * counts (and `detail()`, when given).
   */
  until(
    what: string,
    pred: NodePredicate,
    timeoutMs: number,
    detail?: () => string,
  ): Promise<number> {
    if (pred(this.counts(), this.#present)) return Promise.resolve(performance.now());
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        pred,
        resolve: (at) => {
          clearTimeout(timer);
          resolve(at);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        reject(
          new TimeoutError(
            `Timed out after ${timeoutMs} ms waiting for ${what}; nodes: ${
              JSON.stringify(this.counts())
            }${detail ? `; ${detail()}` : ""}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  #upsert(n: V1Node): void {
    const name = n.metadata?.name;
    if (!name) return;
    const at = performance.now();
    const cond = n.status?.conditions?.find((c) => c.type === "Ready");
    const ready = cond?.status === "True";
    this.#present.set(name, {
      ready,
      port: n.status?.daemonEndpoints?.kubeletEndpoint?.Port,
      reason: cond?.reason,
    });
    if (ready) {
      this.#readyNow.add(name);
      if (!this.readyAt.has(name)) this.readyAt.set(name, at);
    } else this.#readyNow.delete(name);
    this.opts.onNode?.(name);
    this.#check(at);
  }

  #delete(n: V1Node): void {
    const name = n.metadata?.name;
    if (!name) return;
    const at = performance.now();
    this.#present.delete(name);
    this.#readyNow.delete(name);
    if (!this.deletedAt.has(name)) this.deletedAt.set(name, at);
    this.#check(at);
  }

  #check(at: number): void {
    if (!this.#waiters.length) return;
    const c = this.counts();
    const done = this.#waiters.filter((w) => w.pred(c, this.#present));
    if (!done.length) return;
    this.#waiters = this.#waiters.filter((w) => !done.includes(w));
    for (const w of done) w.resolve(at);
  }
}
