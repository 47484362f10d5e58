/**
 * Kubernetes Events (core/v1) about the objects aranya manages: EdgeDevices,
 * Nodes, Pods. What `kubectl describe` and `kubectl get events` show.
 *
 * Writes stay small: a repeat of the same event (same object, type, reason and
 * message) within the aggregation window (10 min) patches the existing Event's
 * `count` and `lastTimestamp` instead of creating a new one, as the kubelet's
 * event correlator does. Recording never throws into the caller: a failed
 * write is logged and reported as `false`.
 */
import type { CoreV1Event, KubernetesObject } from "@kubernetes/client-node";
import type { CoreApi } from "./apis.ts";
import { errorMessage } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { fromApiError, isNotFound } from "./errors.ts";

/** The object an event is about. */
export interface ObjectRef {
  apiVersion?: string;
  kind: string;
  name: string;
  /** Absent or empty for cluster-scoped objects (their Events go to "default"). */
  namespace?: string;
  uid?: string;
}

/** Severity of an event, as Kubernetes knows it. */
export type EventType = "Normal" | "Warning";

/** Records events about objects. */
export interface EventRecorder {
  /**
   * Records that `reason` (UpperCamelCase, machine-readable) happened to `ref`,
   * with a human-readable `message`. Resolves true when an API write was made,
   * false when the write failed (the failure is logged). Never rejects.
   */
  record(ref: ObjectRef, type: EventType, reason: string, message: string): Promise<boolean>;
}

/** An {@link EventRecorder} that records nothing. */
export const nullEventRecorder: EventRecorder = { record: () => Promise.resolve(false) };

/** The reference for an object read from the API. */
export function refOf(obj: KubernetesObject): ObjectRef {
  return {
    apiVersion: obj.apiVersion,
    kind: obj.kind ?? "",
    name: obj.metadata?.name ?? "",
    namespace: obj.metadata?.namespace,
    uid: obj.metadata?.uid,
  };
}

/** Options for {@link ApiEventRecorder}. */
export interface ApiEventRecorderOptions {
  core: CoreApi;
  /** `source.component` and `reportingComponent` (default "aranya"). */
  component?: string;
  /** `source.host` and `reportingInstance` (for example the replica's identity). */
  host?: string;
  /** Repeats within this window update the existing Event, ms (default 10 min). */
  aggregateMs?: number;
  /** Most distinct events remembered for aggregation (default 4096; oldest forgotten first). */
  maxCached?: number;
  log?: Logger;
  /** Clock, injectable for tests. */
  now?: () => Date;
}

/** Longest message an Event carries (the API's own limit for events.k8s.io is 1 kB). */
const MAX_MESSAGE = 1024;

interface Seen {
  namespace: string;
  name: string;
  count: number;
  /** When this event last happened, ms since the epoch. */
  last: number;
}

/** {@link EventRecorder} writing core/v1 Events through the API. */
export class ApiEventRecorder implements EventRecorder {
  readonly #o: ApiEventRecorderOptions;
  readonly #log: Logger;
  readonly #now: () => Date;
  /** Aggregation cache, least recently used first. */
  readonly #seen = new Map<string, Seen>();
  /** Tail of the writes per key: writes for one key run one after another. */
  readonly #tails = new Map<string, Promise<boolean>>();
  /** API writes made (creates and patches). */
  writes = 0;

  constructor(opts: ApiEventRecorderOptions) {
    this.#o = opts;
    this.#log = opts.log ?? nullLogger;
    this.#now = opts.now ?? (() => new Date());
  }

  record(ref: ObjectRef, type: EventType, reason: string, message: string): Promise<boolean> {
    const msg = message.length > MAX_MESSAGE ? message.slice(0, MAX_MESSAGE - 3) + "..." : message;
    const key = JSON.stringify([
      ref.apiVersion ?? "",
      ref.kind,
      ref.namespace ?? "",
      ref.name,
      ref.uid ?? "",
      type,
      reason,
      msg,
    ]);
    const prev = this.#tails.get(key) ?? Promise.resolve(true);
    const next = prev.then(() => this.#write(key, ref, type, reason, msg)).catch((err) => {
      this.#log.warn("recording an event failed", { reason, error: errorMessage(err) });
      return false;
    });
    this.#tails.set(key, next);
    next.then(() => {
      if (this.#tails.get(key) === next) this.#tails.delete(key);
    });
    return next;
  }

  async #write(
    key: string,
    ref: ObjectRef,
    type: EventType,
    reason: string,
    message: string,
  ): Promise<boolean> {
    const now = this.#now();
    const seen = this.#seen.get(key);
    if (seen && now.getTime() - seen.last < (this.#o.aggregateMs ?? 600_000)) {
      try {
        await this.#o.core.patchNamespacedEvent({
          name: seen.name,
          namespace: seen.namespace,
          // A JSON patch (client-node's default patch type): only the two fields that change.
          body: [
            { op: "replace", path: "/count", value: seen.count + 1 },
            { op: "replace", path: "/lastTimestamp", value: now.toISOString() },
          ],
        });
        this.writes++;
        seen.count++;
        seen.last = now.getTime();
        this.#remember(key, seen);
        return true;
      } catch (err) {
        // An Event expired by its TTL is made anew; anything else is reported.
        if (!isNotFound(err)) {
          this.#log.warn("updating an event failed", {
            reason,
            object: `${ref.kind} "${ref.namespace ? ref.namespace + "/" : ""}${ref.name}"`,
            error: fromApiError(`Patching Event "${seen.namespace}/${seen.name}"`, err).message,
          });
          return false;
        }
      }
    }
    const namespace = ref.namespace || "default";
    const name = `${ref.name.slice(0, 220)}.${now.getTime().toString(16)}${
      crypto.getRandomValues(new Uint32Array(1))[0]!.toString(16).padStart(8, "0")
    }`;
    const component = this.#o.component ?? "aranya";
    const event: CoreV1Event = {
      apiVersion: "v1",
      kind: "Event",
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: ref.apiVersion,
        kind: ref.kind,
        name: ref.name,
        namespace: ref.namespace || undefined,
        uid: ref.uid,
      },
      type,
      reason,
      message,
      count: 1,
      firstTimestamp: now,
      lastTimestamp: now,
      source: { component, host: this.#o.host },
      reportingComponent: component,
      reportingInstance: this.#o.host ?? "",
    };
    try {
      await this.#o.core.createNamespacedEvent({ namespace, body: event });
    } catch (err) {
      this.#log.warn("creating an event failed", {
        reason,
        error: fromApiError(`Creating Event "${namespace}/${name}"`, err).message,
      });
      return false;
    }
    this.writes++;
    this.#remember(key, { namespace, name, count: 1, last: now.getTime() });
    return true;
  }

  #remember(key: string, seen: Seen): void {
    this.#seen.delete(key);
    this.#seen.set(key, seen);
    const max = this.#o.maxCached ?? 4096;
    for (const k of this.#seen.keys()) {
      if (this.#seen.size <= max) break;
      this.#seen.delete(k);
    }
  }
}
