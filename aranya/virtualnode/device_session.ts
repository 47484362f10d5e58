/**
 * What aranya does while one device is connected: it asks for the device's
 * node info and writes it into the Node's status (Ready from the device's own
 * conditions), renews the node's Lease in kube-node-lease every heartbeat,
 * refreshes the Node status when the device's conditions change and at least
 * every `statusSyncMs` (never on every heartbeat), and when the link closes
 * marks the Node Ready=False with reason EdgeDeviceDisconnected.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type CoordinationV1Api,
  type CoreV1Api,
  type V1Lease,
  V1MicroTime,
} from "@kubernetes/client-node";
import { CmdKind } from "../../common/envelope.ts";
import { errorMessage } from "../../common/errors.ts";
import type { Link } from "../../common/link.ts";
import { type Logger, nullLogger } from "../../common/log.ts";
import { SessionClient } from "../../common/session/session_client.ts";
import {
  NodeInfoGetCmd_Kind,
  NodeInfoGetCmdSchema,
  NodeStatusMsgSchema,
} from "../../proto/gen/aranya/node_pb.ts";
import { fromApiError, isNotFound } from "../kube/errors.ts";
import { disconnectedStatus, nodeStatusFrom } from "./node_status.ts";

/** Options for {@link DeviceSession}. */
export interface DeviceSessionOptions {
  link: Link;
  core: CoreV1Api;
  coordination: CoordinationV1Api;
  /** Lease renewal interval, ms (default 10 s). */
  heartbeatMs?: number;
  /** Lease duration, seconds (default 40). */
  leaseSeconds?: number;
  /** Longest time between Node status writes while nothing changes, ms (default 5 min). */
  statusSyncMs?: number;
  log?: Logger;
}

/** One connected device. */
export class DeviceSession {
  readonly #o: DeviceSessionOptions;
  readonly #log: Logger;
  readonly client: SessionClient;
  readonly node: string;
  /** API writes made for this device (for the scale figures). */
  writes = 0;

  constructor(opts: DeviceSessionOptions) {
    this.#o = opts;
    this.node = opts.link.device.split("/")[1]!;
    this.#log = (opts.log ?? nullLogger).with({ device: opts.link.device });
    this.client = new SessionClient(opts.link);
  }

  /** Runs until the link closes; then marks the Node disconnected. Never rejects. */
  async run(): Promise<void> {
    this.client.start();
    const closed = this.#o.link.closed;
    let lastConditions = "";
    let lastWrite = 0;
    const sync = async (kind: NodeInfoGetCmd_Kind) => {
      const reply = await this.client.request(
        CmdKind.CMD_NODE_INFO_GET,
        toBinary(NodeInfoGetCmdSchema, create(NodeInfoGetCmdSchema, { kind })),
      );
      const msg = fromBinary(NodeStatusMsgSchema, reply.payload);
      const key = JSON.stringify(msg.conditions.map((c) => [c.type, c.status]));
      if (
        kind === NodeInfoGetCmd_Kind.DYNAMIC && key === lastConditions &&
        Date.now() - lastWrite < (this.#o.statusSyncMs ?? 300_000)
      ) return;
      const node = await this.#o.core.readNode({ name: this.node });
      const next = nodeStatusFrom(msg, node.status);
      if (kind === NodeInfoGetCmd_Kind.DYNAMIC) next.nodeInfo = node.status?.nodeInfo;
      node.status = next;
      await this.#o.core.replaceNodeStatus({ name: this.node, body: node });
      this.writes++;
      lastConditions = key;
      lastWrite = Date.now();
    };
    try {
      await sync(NodeInfoGetCmd_Kind.ALL);
      this.#log.info("edge node is ready", { node: this.node });
    } catch (err) {
      this.#log.warn("first node status sync failed", { error: errorMessage(err) });
    }
    const heartbeat = this.#o.heartbeatMs ?? 10_000;
    let stopped = false;
    closed.then(() => stopped = true);
    while (!stopped) {
      try {
        await this.#renewLease();
      } catch (err) {
        this.#log.warn("lease renewal failed", { error: errorMessage(err) });
      }
      await Promise.race([closed, new Promise((r) => setTimeout(r, heartbeat))]);
      if (stopped) break;
      try {
        await sync(NodeInfoGetCmd_Kind.DYNAMIC);
      } catch (err) {
        if (!stopped) this.#log.warn("node status sync failed", { error: errorMessage(err) });
      }
    }
    try {
      const node = await this.#o.core.readNode({ name: this.node });
      node.status = disconnectedStatus(node.status);
      await this.#o.core.replaceNodeStatus({ name: this.node, body: node });
      this.writes++;
      this.#log.info("edge node disconnected", { node: this.node });
    } catch (err) {
      if (!isNotFound(err)) {
        this.#log.warn("marking the node disconnected failed", { error: errorMessage(err) });
      }
    }
  }

  async #renewLease(): Promise<void> {
    const name = this.node;
    const namespace = "kube-node-lease";
    // A MicroTime: the API server wants six fractional digits, which V1MicroTime writes.
    const now = new V1MicroTime();
    let lease: V1Lease | undefined;
    try {
      lease = await this.#o.coordination.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Lease "${namespace}/${name}"`, err);
    }
    const spec = {
      holderIdentity: name,
      leaseDurationSeconds: this.#o.leaseSeconds ?? 40,
      renewTime: now,
    };
    try {
      if (!lease) {
        await this.#o.coordination.createNamespacedLease({
          namespace,
          body: {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name, namespace },
            spec,
          },
        });
      } else {
        lease.spec = { ...lease.spec, ...spec };
        await this.#o.coordination.replaceNamespacedLease({ name, namespace, body: lease });
      }
      this.writes++;
    } catch (err) {
      throw fromApiError(`Renewing Lease "${namespace}/${name}"`, err);
    }
  }
}
