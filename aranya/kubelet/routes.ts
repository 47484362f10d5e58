/**
 * The kubelet API's routes, parsed from a request's method, path and query
 * (pure: no I/O), and the authorization attributes the kubelet derives from
 * them (`nodes/<subresource>` with a verb from the HTTP method).
 *
 * Paths as the kubelet serves them (pkg/kubelet/server):
 * `/healthz`, `/pods`, `/runningpods/`, `/stats/summary`, `/metrics/resource`,
 * `/containerLogs/{ns}/{pod}/{container}`, `/exec|attach|run/{ns}/{pod}[/{uid}]/{container}`,
 * `/portForward/{ns}/{pod}[/{uid}]`, `/logs/{path}` (a host log file).
 */
import { InvalidInputError, NotFoundError } from "@aranya/common/errors";

/** Options of an exec or attach (kubelet query parameters). */
export interface StreamQuery {
  command: string[];
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

/** Options of containerLogs. */
export interface LogsQuery {
  follow: boolean;
  timestamps: boolean;
  previous: boolean;
  /** Absent: all lines. */
  tailLines?: number;
  /** Absent: no limit. */
  limitBytes?: number;
  /** RFC 3339 lower bound (from sinceTime or sinceSeconds), absent: none. */
  since?: string;
}

/** A pod addressed by a route (`uid` only when the path names it). */
export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

/** A parsed kubelet route. */
export type Route =
  | { kind: "healthz" }
  | { kind: "pods" }
  | { kind: "runningpods" }
  | { kind: "stats-summary" }
  | { kind: "metrics-resource" }
  | { kind: "logs"; pod: PodRef; container: string; query: LogsQuery }
  | { kind: "exec" | "attach" | "run"; pod: PodRef; container: string; query: StreamQuery }
  | { kind: "port-forward"; pod: PodRef; ports: number[] }
  /** A host log file of the device (`/logs/{path}`, under arhat's host log folder). */
  | { kind: "node-logs"; path: string };

/** What a request asks of the node, as a SubjectAccessReview states it. */
export interface NodeAttributes {
  verb: string;
  subresource: "proxy" | "stats" | "metrics" | "log" | "spec";
}

/** The kubelet's authorization attributes for `method` `path`. */
export function nodeAttributes(method: string, path: string): NodeAttributes {
  const verb = ({
    POST: "create",
    GET: "get",
    HEAD: "get",
    PUT: "update",
    PATCH: "patch",
    DELETE: "delete",
  } as Record<string, string>)[method.toUpperCase()] ?? method.toLowerCase();
  const first = path.split("/")[1] ?? "";
  const subresource = first === "stats"
    ? "stats"
    : first === "metrics"
    ? "metrics"
    : first === "logs"
    ? "log"
    : first === "spec"
    ? "spec"
    : "proxy";
  return { verb, subresource };
}

function flag(q: URLSearchParams, ...names: string[]): boolean {
  return names.some((n) => {
    const v = q.get(n);
    return v === "1" || v === "true" || v === "";
  });
}

function int(q: URLSearchParams, name: string, min: number): number | undefined {
  const v = q.get(name);
  if (v === null || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new InvalidInputError(
      `Query parameter "${name}" must be an integer >= ${min}, got "${v}"`,
    );
  }
  return n;
}

function logsQuery(q: URLSearchParams, now: Date): LogsQuery {
  const sinceSeconds = int(q, "sinceSeconds", 1);
  const sinceTime = q.get("sinceTime") || undefined;
  if (sinceSeconds !== undefined && sinceTime) {
    throw new InvalidInputError(`Only one of "sinceSeconds" and "sinceTime" may be set`);
  }
  if (sinceTime && Number.isNaN(Date.parse(sinceTime))) {
    throw new InvalidInputError(
      `Query parameter "sinceTime" is not an RFC 3339 time: "${sinceTime}"`,
    );
  }
  return {
    follow: flag(q, "follow"),
    timestamps: flag(q, "timestamps"),
    previous: flag(q, "previous"),
    tailLines: int(q, "tailLines", 0),
    limitBytes: int(q, "limitBytes", 1),
    since: sinceTime ??
      (sinceSeconds !== undefined
        ? new Date(now.getTime() - sinceSeconds * 1000).toISOString()
        : undefined),
  };
}

function streamQuery(kind: "exec" | "attach" | "run", q: URLSearchParams): StreamQuery {
  const command = q.getAll("command");
  if (kind === "run") command.push(...q.getAll("cmd").flatMap((c) => c.split(" ").filter(Boolean)));
  if ((kind === "exec" || kind === "run") && command.length === 0) {
    throw new InvalidInputError(`Query parameter "command" is required for ${kind}`);
  }
  const query = {
    command,
    stdin: flag(q, "stdin", "input"),
    stdout: flag(q, "stdout", "output"),
    stderr: flag(q, "stderr", "error"),
    tty: flag(q, "tty"),
  };
  if (kind === "run") return { ...query, stdin: false, stdout: true, stderr: true, tty: false };
  if (!query.stdin && !query.stdout && !query.stderr) {
    throw new InvalidInputError("At least one of stdin, stdout and stderr must be requested");
  }
  // With a terminal, stderr is merged into stdout (the kubelet does the same).
  if (query.tty) query.stderr = false;
  return query;
}

/** Parses a request; throws NotFoundError for unknown paths, InvalidInputError for bad queries. */
export function parseRoute(method: string, url: URL, now = new Date()): Route {
  const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const [head, ...rest] = parts;
  const q = url.searchParams;
  const m = method.toUpperCase();
  const get = m === "GET" || m === "HEAD";
  switch (head) {
    case "healthz":
      if (get && rest.length === 0) return { kind: "healthz" };
      break;
    case "pods":
      if (get && rest.length === 0) return { kind: "pods" };
      break;
    case "runningpods":
      if (get && rest.length === 0) return { kind: "runningpods" };
      break;
    case "stats":
      if (get && rest.length === 1 && rest[0] === "summary") return { kind: "stats-summary" };
      break;
    case "metrics":
      if (get && rest.length === 1 && rest[0] === "resource") return { kind: "metrics-resource" };
      break;
    case "logs":
      if (get && rest.length >= 1 && !rest.includes("..")) {
        return { kind: "node-logs", path: rest.join("/") };
      }
      break;
    case "containerLogs":
      if (get && rest.length === 3) {
        return {
          kind: "logs",
          pod: { namespace: rest[0]!, name: rest[1]! },
          container: rest[2]!,
          query: logsQuery(q, now),
        };
      }
      break;
    case "exec":
    case "attach":
    case "run": {
      const ok = head === "run" ? m === "POST" : m === "POST" || m === "GET";
      if (ok && (rest.length === 3 || rest.length === 4)) {
        const kind = head as "exec" | "attach" | "run";
        return {
          kind,
          pod: {
            namespace: rest[0]!,
            name: rest[1]!,
            uid: rest.length === 4 ? rest[2] : undefined,
          },
          container: rest[rest.length - 1]!,
          query: streamQuery(kind, q),
        };
      }
      break;
    }
    case "portForward":
      if ((m === "POST" || m === "GET") && (rest.length === 2 || rest.length === 3)) {
        const ports = q.getAll("port").concat(q.getAll("ports")).flatMap((p) => p.split(","))
          .filter(Boolean).map((p) => {
            const n = Number(p);
            if (!Number.isInteger(n) || n < 1 || n > 65535) {
              throw new InvalidInputError(`Port "${p}" is not a number in 1..65535`);
            }
            return n;
          });
        return {
          kind: "port-forward",
          pod: { namespace: rest[0]!, name: rest[1]!, uid: rest[2] },
          ports,
        };
      }
      break;
  }
  throw new NotFoundError(`No kubelet route for ${m} "${url.pathname}"`);
}
