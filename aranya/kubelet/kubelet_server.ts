/**
 * The kubelet API for every virtual node: ONE HTTPS server (one handler, one
 * serving certificate, one client-CA check) in front of all devices.
 *
 * The API server reaches a node's kubelet at the Node's address and
 * `daemonEndpoints.kubeletEndpoint.Port`, and node-scoped paths
 * (`/stats/summary`, `/metrics/resource`, `/pods`) do not name the node. So
 * each node gets its own port from a range (`portFor`), and the port a
 * connection arrived on names the node; every port feeds its connections to
 * the same TLS server. A port costs one listening socket, not a server.
 *
 * Every request is authenticated (authenticator.ts) and authorized through a
 * SubjectAccessReview on `nodes/<subresource>` of that node (authorizer.ts)
 * before anything else, as the kubelet does. Requests for a node whose device
 * is offline get 503 with a message saying so.
 */
import https from "node:https";
import net from "node:net";
import { Buffer } from "node:buffer";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import type { V1Pod } from "@kubernetes/client-node";
import {
  AranyaError,
  errorMessage,
  ForbiddenError,
  InvalidInputError,
  NotFoundError,
  UnavailableError,
} from "@aranya/common/errors";
import { readySignal } from "@aranya/common/lifecycle";
import { guardConnections } from "@aranya/common/connection_guard";
import { type Logger, nullLogger } from "@aranya/common/log";
import type { SessionClient } from "@aranya/common/session/session_client";
import type { Authenticator } from "./authenticator.ts";
import type { Authorizer } from "./authorizer.ts";
import { streamContainerLogs } from "./container_logs.ts";
import { forwardConnection } from "./port_forward.ts";
import { runRemoteCommand } from "./remote_command.ts";
import { nodeAttributes, parseRoute, type PodRef, type Route } from "./routes.ts";
import {
  isSpdyUpgrade,
  offeredProtocols,
  serveSpdyPortForward,
  serveSpdyRemoteCommand,
  SPDY_PORT_FORWARD_PROTOCOL,
  SPDY_REMOTE_COMMAND_PROTOCOLS,
} from "./spdy_upgrade.ts";
import type { StreamTimeouts } from "./stream_util.ts";
import {
  isWebSocketUpgrade,
  offeredSubprotocols,
  serveWebSocketPortForward,
  serveWebSocketRemoteCommand,
  WS_PORT_FORWARD_PROTOCOLS,
  WS_REMOTE_COMMAND_PROTOCOLS,
} from "./websocket_channels.ts";

/** What the kubelet API needs to know about pods and devices. */
export interface KubeletBackend {
  /** The pod `namespace/name` bound to some node, from a cache (no I/O). */
  pod(namespace: string, name: string): V1Pod | undefined;
  /** Pods bound to `node`, from a cache. */
  podsOn(node: string): V1Pod[];
  /** The device session of `node` while its device is connected. */
  device(node: string): SessionClient | undefined;
  /**
   * True when `pod` is its node's virtual pod (the device host): matched by
   * namespace, name and the uid aranya recorded, never by a label.
   */
  isVirtualPod(pod: V1Pod): boolean;
  /** Why `pod` may not run on its node's device (undefined: it may). */
  refusal(pod: V1Pod): string | undefined;
}

/** Node-level data the server fetches from a device on request. */
export interface NodeStatsSource {
  /** `/stats/summary` body (JSON-serializable). */
  summary(node: string, client: SessionClient, signal: AbortSignal): Promise<unknown>;
  /** `/metrics/resource` body (Prometheus text). */
  resourceMetrics(node: string, client: SessionClient, signal: AbortSignal): Promise<string>;
}

/** The serving certificate in use (PEM); `onChange` swaps it without a restart. */
export interface ServingKeyPair {
  current(): { key: string; cert: string };
  onChange(fn: (kp: { key: string; cert: string }) => void): void;
}

/** Most bytes of output a /run request collects (it answers with all of it at once). */
export const RUN_OUTPUT_LIMIT = 4 << 20;

/** Options for {@link KubeletServer}. */
export interface KubeletServerOptions {
  /** Listen address of every node port (default "0.0.0.0"). */
  hostname?: string;
  /** First port of the node port range. */
  firstPort: number;
  /** Ports in the range (one per node). */
  portCount: number;
  certificate: ServingKeyPair;
  /** Cluster client CA (PEM) that client certificates are verified against. */
  clientCa: string;
  authenticator: Authenticator;
  authorizer: Authorizer;
  backend: KubeletBackend;
  stats?: NodeStatsSource;
  /** Stream creation and idle timeouts, ms (defaults 30 s and 4 h, as the kubelet's). */
  timeouts?: Partial<StreamTimeouts>;
  /** Counts served requests by route kind and HTTP code. */
  onRequest?: (route: string, code: number) => void;
  log?: Logger;
}

interface NodePort {
  node: string;
  port: number;
  listener?: net.Server;
}

const STATUS_REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** HTTP status of a domain error. */
export function httpStatusOf(err: unknown): number {
  if (!(err instanceof AranyaError)) return 500;
  return ({
    "unauthenticated": 401,
    "forbidden": 403,
    "not-found": 404,
    "invalid-input": 400,
    "not-supported": 400,
    "unavailable": 503,
    "timeout": 504,
  } as Record<string, number>)[err.kind] ?? 500;
}

function statusBody(code: number, message: string): string {
  return JSON.stringify({
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason: STATUS_REASONS[code] ?? "InternalError",
    code,
  });
}

/**
 * The first of `supported` (preference order) that the client offered; "" in
 * `supported` stands for "no protocol offered". Throws InvalidInputError
 * naming both lists.
 */
function negotiate(offered: string[], supported: readonly string[], what: string): string {
  const protocol = supported.find((p) => p ? offered.includes(p) : offered.length === 0);
  if (protocol === undefined) {
    throw new InvalidInputError(
      `None of the offered ${what} protocols ${JSON.stringify(offered)} is supported; ` +
        `this kubelet speaks ${JSON.stringify(supported)}`,
    );
  }
  return protocol;
}

/** The kubelet API server for all virtual nodes. */
export class KubeletServer {
  readonly #o: KubeletServerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  readonly #timeouts: StreamTimeouts;
  readonly #byNode = new Map<string, NodePort>();
  readonly #byPort = new Map<number, NodePort>();
  #server?: https.Server;
  #running = false;

  constructor(opts: KubeletServerOptions) {
    if (opts.portCount < 1) throw new InvalidInputError("The kubelet port range is empty");
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({ component: "kubelet" });
    this.#timeouts = {
      creationMs: opts.timeouts?.creationMs ?? 30_000,
      idleMs: opts.timeouts?.idleMs ?? 4 * 3600_000,
    };
  }

  /** Resolves once the server accepts connections on the ports claimed so far. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Node -> port, for the nodes served now. */
  get ports(): ReadonlyMap<string, number> {
    return new Map([...this.#byNode].map(([n, p]) => [n, p.port]));
  }

  /**
   * The port `node`'s kubelet API is served on (claimed now, listening soon
   * after if the server runs): the one it has, else `current` (the port its
   * Node advertises) when free, else the lowest free port. Throws
   * UnavailableError when the range is exhausted. No I/O: listening happens in
   * the background, and failures are logged.
   */
  portFor(node: string, current?: number): number {
    const have = this.#byNode.get(node);
    if (have) return have.port;
    const first = this.#o.firstPort, last = first + this.#o.portCount - 1;
    let port = current !== undefined && current >= first && current <= last &&
        !this.#byPort.has(current)
      ? current
      : undefined;
    for (let p = first; port === undefined && p <= last; p++) {
      if (!this.#byPort.has(p)) port = p;
    }
    if (port === undefined) {
      throw new UnavailableError(
        `No free kubelet port for node "${node}": all ${this.#o.portCount} ports from ${first} are in use`,
      );
    }
    const np: NodePort = { node, port };
    this.#byNode.set(node, np);
    this.#byPort.set(port, np);
    if (this.#running) this.#listen(np).catch(() => {});
    return port;
  }

  /** Stops serving `node` (its port closes and becomes free). */
  release(node: string): void {
    const np = this.#byNode.get(node);
    if (!np) return;
    this.#byNode.delete(node);
    this.#byPort.delete(np.port);
    np.listener?.close();
  }

  async run(signal: AbortSignal): Promise<void> {
    const kp = this.#o.certificate.current();
    const server = https.createServer({
      key: kp.key,
      cert: kp.cert,
      ca: this.#o.clientCa,
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: 10_000,
    }, (req, res) => void this.#handle(req, res));
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.#upgrade(req, socket, head);
    });
    // Bounded before authentication: a TLS handshake and the first request within 10 s, and
    // at most 1024 connections from one address (the API server opens one per stream).
    guardConnections(server, { perAddress: 1024, firstRequestMs: 10_000, tls: true });
    server.on("tlsClientError", (err: Error) => {
      this.#log.debug("TLS handshake failed", { error: err.message });
    });
    this.#o.certificate.onChange((next) => {
      try {
        server.setSecureContext({ key: next.key, cert: next.cert, ca: this.#o.clientCa });
        this.#log.info("kubelet serving certificate replaced");
      } catch (err) {
        this.#log.error("replacing the kubelet serving certificate failed", {
          error: errorMessage(err),
        });
      }
    });
    this.#server = server;
    this.#running = true;
    try {
      await Promise.all([...this.#byNode.values()].map((np) => this.#listen(np).catch(() => {})));
      this.#ready.resolve();
      this.#log.info("kubelet API serving", {
        nodes: this.#byNode.size,
        ports: `${this.#o.firstPort}-${this.#o.firstPort + this.#o.portCount - 1}`,
      });
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
    } finally {
      this.#running = false;
      for (const np of this.#byNode.values()) np.listener?.close();
      server.close();
      server.closeAllConnections?.();
    }
  }

  #listen(np: NodePort): Promise<void> {
    const listener = net.createServer((socket) => {
      // One TLS server for every port; the port (socket.localPort) names the node.
      this.#server?.emit("connection", socket);
    });
    np.listener = listener;
    return new Promise((resolve, reject) => {
      listener.once("error", (err: Error) => {
        this.#log.error("kubelet port cannot listen", {
          node: np.node,
          port: np.port,
          error: err.message,
        });
        reject(err);
      });
      listener.listen(np.port, this.#o.hostname ?? "0.0.0.0", () => {
        if (this.#byPort.get(np.port) !== np) listener.close();
        resolve();
      });
    });
  }

  /** Node of a connection (by the port it arrived on), authenticated and authorized. */
  async #admit(req: IncomingMessage): Promise<{ node: string; route: Route }> {
    const socket = req.socket as TLSSocket;
    const np = this.#byPort.get(socket.localPort ?? -1);
    if (!np) throw new NotFoundError(`No node is served on port ${socket.localPort}`);
    const url = new URL(req.url ?? "/", "https://kubelet");
    const user = await this.#o.authenticator.authenticate(socket, req.headers.authorization);
    await this.#o.authorizer.authorize(
      user,
      np.node,
      nodeAttributes(req.method ?? "GET", url.pathname),
    );
    return { node: np.node, route: parseRoute(req.method ?? "GET", url) };
  }

  /** The pod a route names, on `node`, with its device session. */
  #target(node: string, ref: PodRef, container?: string) {
    const key = `${ref.namespace}/${ref.name}`;
    const pod = this.#o.backend.pod(ref.namespace, ref.name);
    if (!pod || pod.spec?.nodeName !== node || (ref.uid && pod.metadata?.uid !== ref.uid)) {
      throw new NotFoundError(`Pod "${key}" is not on node "${node}"`);
    }
    // Host access only through the virtual pod aranya created; a pod the device may not run
    // (another tenant's, a look-alike of the virtual pod) reaches nothing on the device.
    const isVirtual = this.#o.backend.isVirtualPod(pod);
    const refused = this.#o.backend.refusal(pod);
    if (refused !== undefined) throw new ForbiddenError(refused);
    if (container !== undefined) {
      const names = [
        ...(pod.spec?.containers ?? []),
        ...(pod.spec?.initContainers ?? []),
        ...(pod.spec?.ephemeralContainers ?? []),
      ].map((c) => c.name);
      if (!names.includes(container)) {
        throw new NotFoundError(`Container "${container}" is not in pod "${key}"`);
      }
    }
    return {
      client: this.#device(node),
      podKey: key,
      podUid: isVirtual ? "" : pod.metadata?.uid ?? "",
      creationTimeoutMs: this.#timeouts.creationMs,
    };
  }

  /** The session of `node`'s device; UnavailableError when it is offline. */
  #device(node: string): SessionClient {
    const client = this.#o.backend.device(node);
    if (!client) {
      throw new UnavailableError(
        `Node "${node}" is offline: its device is not connected to aranya`,
      );
    }
    return client;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let kind = "unknown";
    try {
      const { node, route } = await this.#admit(req);
      kind = route.kind;
      const json = (body: unknown) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      switch (route.kind) {
        case "healthz":
          res.writeHead(200, { "content-type": "text/plain" });
          res.end("ok");
          break;
        case "pods":
        case "runningpods": {
          const pods = this.#o.backend.podsOn(node).filter((p) =>
            route.kind === "pods" || p.status?.phase === "Running"
          );
          json({ kind: "PodList", apiVersion: "v1", metadata: {}, items: pods });
          break;
        }
        case "stats-summary":
        case "metrics-resource": {
          if (!this.#o.stats) throw new NotFoundError(`Stats are not served by this kubelet API`);
          const client = this.#device(node);
          const signal = AbortSignal.timeout(this.#timeouts.creationMs);
          if (route.kind === "stats-summary") {
            json(await this.#o.stats.summary(node, client, signal));
          } else {
            const text = await this.#o.stats.resourceMetrics(node, client, signal);
            res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
            res.end(text);
          }
          break;
        }
        case "logs": {
          const t = this.#target(node, route.pod, route.container);
          await streamContainerLogs({ ...t, container: route.container }, route.query, res);
          break;
        }
        case "node-logs": {
          // The device's host log files, through host management (arhat's host.allowLogs).
          await streamContainerLogs(
            {
              client: this.#device(node),
              podUid: "",
              container: "host",
              path: route.path,
              creationTimeoutMs: this.#timeouts.creationMs,
            },
            { follow: false, timestamps: false, previous: false },
            res,
          );
          break;
        }
        case "run": {
          const t = this.#target(node, route.pod, route.container);
          const out: Uint8Array[] = [];
          // /run answers with the whole output at once: bounded, and the command is stopped
          // once it is exceeded.
          let size = 0;
          const stop = new AbortController();
          const collect = (d: Uint8Array) => {
            size += d.byteLength;
            if (size > RUN_OUTPUT_LIMIT) stop.abort();
            else out.push(d);
          };
          const status = await runRemoteCommand(
            { ...t, container: route.container },
            route.query,
            {
              stdout: collect,
              stderr: collect,
              signal: AbortSignal.any([stop.signal, AbortSignal.timeout(this.#timeouts.idleMs)]),
            },
          );
          if (stop.signal.aborted) {
            throw new InvalidInputError(
              `The output of /run exceeds ${RUN_OUTPUT_LIMIT} bytes; use exec to stream it`,
            );
          }
          if (status.status === "Failure" && status.reason !== "NonZeroExitCode") {
            throw new UnavailableError(status.message ?? "The command failed");
          }
          res.writeHead(200, { "content-type": "text/plain" });
          for (const d of out) res.write(d);
          res.end();
          break;
        }
        default:
          throw new InvalidInputError(
            `"${req.url}" needs a streaming upgrade (SPDY/3.1 or WebSocket)`,
          );
      }
      this.#o.onRequest?.(kind, 200);
    } catch (err) {
      const code = httpStatusOf(err);
      this.#o.onRequest?.(kind, code);
      if (code >= 500) {
        this.#log.warn("kubelet API request failed", {
          path: req.url?.split("?")[0],
          error: errorMessage(err),
        });
      }
      if (res.headersSent) {
        res.end();
        return;
      }
      res.writeHead(code, { "content-type": "application/json" });
      res.end(statusBody(code, errorMessage(err)));
    }
  }

  async #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => {});
    let kind = "unknown";
    const refuse = (code: number, message: string) => {
      this.#o.onRequest?.(kind, code);
      const body = statusBody(code, message);
      socket.end(
        `HTTP/1.1 ${code} ${STATUS_REASONS[code] ?? "Error"}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `Connection: close\r\n\r\n${body}`,
      );
    };
    try {
      const { node, route } = await this.#admit(req);
      kind = route.kind;
      const spdy = isSpdyUpgrade(req);
      const ws = isWebSocketUpgrade(req);
      if (!spdy && !ws) {
        throw new InvalidInputError(`Upgrade "${req.headers.upgrade}" is not supported`);
      }
      const log = this.#log.with({ node, route: route.kind });
      if (route.kind === "exec" || route.kind === "attach") {
        const t = this.#target(node, route.pod, route.container);
        const target = { ...t, container: route.container };
        const run = (channels: Parameters<typeof runRemoteCommand>[2]) =>
          runRemoteCommand(target, route.query, channels);
        if (spdy) {
          const protocol = negotiate(
            offeredProtocols(req),
            SPDY_REMOTE_COMMAND_PROTOCOLS,
            "stream",
          );
          serveSpdyRemoteCommand({
            socket,
            head,
            protocol,
            query: route.query,
            timeouts: this.#timeouts,
            log,
            run,
          });
        } else {
          const protocol = negotiate(
            offeredSubprotocols(req),
            WS_REMOTE_COMMAND_PROTOCOLS,
            "WebSocket",
          );
          await serveWebSocketRemoteCommand({
            req,
            socket,
            head,
            protocol,
            query: route.query,
            timeouts: this.#timeouts,
            log,
            run,
          });
        }
      } else if (route.kind === "port-forward") {
        const t = this.#target(node, route.pod);
        const forward = (port: number, channel: Parameters<typeof forwardConnection>[2]) =>
          forwardConnection(t, port, channel);
        if (spdy) {
          negotiate(offeredProtocols(req), [SPDY_PORT_FORWARD_PROTOCOL], "stream");
          serveSpdyPortForward({ socket, head, timeouts: this.#timeouts, log, forward });
        } else {
          const protocol = negotiate(
            offeredSubprotocols(req),
            WS_PORT_FORWARD_PROTOCOLS,
            "WebSocket",
          );
          if (route.ports.length === 0) {
            throw new InvalidInputError(`Query parameter "ports" is required for port-forward`);
          }
          await serveWebSocketPortForward({
            req,
            socket,
            head,
            protocol,
            ports: route.ports,
            timeouts: this.#timeouts,
            log,
            forward,
          });
        }
      } else {
        throw new InvalidInputError(`"${route.kind}" does not take a streaming upgrade`);
      }
      this.#o.onRequest?.(kind, 101);
    } catch (err) {
      const code = httpStatusOf(err);
      if (code >= 500) {
        this.#log.warn("kubelet API upgrade failed", {
          path: req.url?.split("?")[0],
          error: errorMessage(err),
        });
      }
      refuse(code, errorMessage(err));
    }
  }
}
