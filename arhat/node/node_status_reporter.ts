/**
 * Pushes the node's status to aranya instead of waiting to be asked.
 *
 * Every `checkIntervalMs` (the floor: nothing is measured or sent more often)
 * the reporter measures the node's dynamic status (resources and conditions)
 * and, while a session with aranya is up, sends it as an unsolicited
 * MSG_NODE_STATUS when what aranya shows from it changed: a condition's
 * status or reason, capacity or allocatable (common/node_status_key.ts;
 * condition messages, which carry current amounts, do not count). Unchanged
 * status is sent again after `maxIntervalMs` (the ceiling, default 1 h) so
 * a push lost on a half-dead link is repaired without aranya asking.
 *
 * Nothing is queued while offline: on every connect aranya asks for the full
 * node info (CMD_NODE_INFO_GET), and the reply, handed to {@link observe},
 * becomes the reporter's baseline. A failed send is retried at the next
 * check.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { errorMessage } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { nodeStatusKey } from "@aranya/common/node_status_key";
import { type NodeStatusMsg, NodeStatusMsgSchema } from "@aranya/proto/gen/aranya/node_pb";

/**
 * Default ceiling: unchanged status is sent again after an hour. A push is
 * about 640 bytes on the wire (a 466-byte status, framing, TLS, TCP and its
 * ACK): hourly adds 15 KB/day to an idle link (30 minutes would add 31 KB and
 * take a websocket link past 200 KB/day). Lost pushes are rare anyway (the
 * transports are reliable and a reconnect brings a full sync), so the ceiling
 * is a safety net, not the heartbeat.
 */
export const DEFAULT_MAX_INTERVAL_MS = 60 * 60_000;

/** Options for {@link NodeStatusReporter}. */
export interface NodeStatusReporterOptions {
  /** Measures the node's dynamic status (no system info needed); should not reject. */
  collect: () => Promise<NodeStatusMsg>;
  /**
   * Sends a MSG_NODE_STATUS payload over the live session. Returns undefined
   * when no session is up (then nothing is sent); rejects when the send failed.
   */
  publish: (payload: Uint8Array) => Promise<void> | undefined;
  /** The floor: how often the status is measured and compared, ms. */
  checkIntervalMs: number;
  /** The ceiling: longest time between two sends while connected, ms (default 1 h). */
  maxIntervalMs?: number;
  /** Clock, injectable for tests (ms since the epoch). */
  now?: () => number;
  log?: Logger;
}

/** Sends node status changes to aranya, with a floor and a ceiling on frequency. */
export class NodeStatusReporter {
  readonly #o: NodeStatusReporterOptions;
  readonly #now: () => number;
  readonly #log: Logger;
  /** Key and time of what aranya last got (a push or a reply); undefined: nothing yet. */
  #sentKey: string | undefined;
  #sentAt = 0;
  /** Messages pushed so far (for tests and logs). */
  pushed = 0;

  constructor(opts: NodeStatusReporterOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#log = opts.log ?? nullLogger;
  }

  /** Records a status aranya received otherwise (the reply to its CMD_NODE_INFO_GET). */
  observe(msg: NodeStatusMsg): void {
    this.#sentKey = nodeStatusKey(msg);
    this.#sentAt = this.#now();
  }

  /**
   * One evaluation: measures, and sends when the status changed or the ceiling
   * passed. Resolves true when it sent. Never rejects.
   */
  async check(): Promise<boolean> {
    let msg: NodeStatusMsg;
    try {
      msg = await this.#o.collect();
    } catch (err) {
      this.#log.warn("measuring the node failed", { error: errorMessage(err) });
      return false;
    }
    const key = nodeStatusKey(msg);
    const ceiling = this.#o.maxIntervalMs ?? DEFAULT_MAX_INTERVAL_MS;
    const due = key !== this.#sentKey || this.#now() - this.#sentAt >= ceiling;
    if (!due) return false;
    const sending = this.#o.publish(
      toBinary(NodeStatusMsgSchema, create(NodeStatusMsgSchema, msg)),
    );
    if (!sending) return false; // offline: aranya asks for everything when it is back
    try {
      await sending;
    } catch (err) {
      this.#log.debug("pushing the node status failed; retried at the next check", {
        error: errorMessage(err),
      });
      return false;
    }
    if (key !== this.#sentKey) {
      this.#log.info("node status changed; pushed to aranya", {
        conditions: msg.conditions.map((c) => `${c.type}=${c.reason}`),
      });
    }
    this.#sentKey = key;
    this.#sentAt = this.#now();
    this.pushed++;
    return true;
  }

  /** Checks every `checkIntervalMs` until `signal` aborts. Never rejects. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, this.#o.checkIntervalMs);
        function done() {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          resolve();
        }
        signal.addEventListener("abort", done, { once: true });
      });
      if (signal.aborted) break;
      await this.check();
    }
  }
}
