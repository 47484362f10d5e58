/**
 * Runs one probe or lifecycle-hook action against a container, the way the
 * kubelet does:
 *
 * - exec: a command in the container (through the engine); success is exit
 *   code 0; output is kept up to 10 KiB for the message;
 * - httpGet: a GET to the pod's address (or `host`), success is a status
 *   from 200 to 399; HTTPS does not verify the certificate; redirects are
 *   not followed (a 3xx is already a success);
 * - tcpSocket: a TCP connection that opens;
 * - grpc: the standard `grpc.health.v1.Health/Check`, success is SERVING;
 * - sleep (hooks only): waits.
 *
 * Every action ends within its timeout and reports why it failed in words a
 * user can act on. Nothing here keeps state between calls.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { sleep } from "@aranya/common/backoff";
import { concatBytes } from "@aranya/common/bytes";
import { errorMessage } from "@aranya/common/errors";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "@aranya/proto/gen/aranya/health_pb";
import type {
  ExecAction,
  GrpcAction,
  HttpGetAction,
  LifecycleHandler,
  Probe,
  TcpSocketAction,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { ContainerRuntime } from "../runtime/runtime.ts";

/** The outcome of one action. */
export interface ActionResult {
  ok: boolean;
  /** Why it failed (or the exec output); empty on a quiet success. */
  message: string;
}

/** Where an action runs. */
export interface ActionTarget {
  runtime: ContainerRuntime;
  /** Engine id of the container (exec actions run in it). */
  containerId: string;
  /** Address network actions dial when they name no host (pod IP, or 127.0.0.1 with hostNetwork). */
  address: string;
}

/** The most exec output kept for a message, as the kubelet keeps. */
const MAX_OUTPUT = 10 * 1024;

/** What a probe or hook does. */
export type Action = Probe["action"] | LifecycleHandler["action"];

/**
 * Runs `action` once, for at most `timeoutMs` (sleep actions ignore the
 * timeout: they are their own duration). Never throws: failures are results.
 */
export async function runAction(
  target: ActionTarget,
  action: Action,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ActionResult> {
  const deadline = AbortSignal.timeout(Math.max(1, timeoutMs));
  const abort = signal ? AbortSignal.any([signal, deadline]) : deadline;
  try {
    switch (action.case) {
      case "exec":
        return await execAction(target, action.value, abort, timeoutMs);
      case "httpGet":
        return await httpAction(target, action.value, abort, timeoutMs);
      case "tcpSocket":
        return await tcpAction(target, action.value, abort, timeoutMs);
      case "grpc":
        return await grpcAction(target, action.value, timeoutMs);
      case "sleepSeconds":
        await sleep(action.value * 1000, signal);
        return { ok: true, message: "" };
      default:
        return { ok: false, message: "The action names no handler" };
    }
  } catch (err) {
    if (deadline.aborted) return { ok: false, message: `Timed out after ${timeoutMs} ms` };
    return { ok: false, message: errorMessage(err) };
  }
}

async function execAction(
  t: ActionTarget,
  a: ExecAction,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<ActionResult> {
  if (a.command.length === 0) return { ok: false, message: "The exec action has no command" };
  const h = await t.runtime.exec(t.containerId, {
    cmd: a.command,
    stdout: true,
    stderr: true,
    signal,
  });
  const chunks: Uint8Array[] = [];
  let kept = 0;
  let code: number;
  const reader = h.output.getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      if (kept < MAX_OUTPUT) {
        const part = value.data.subarray(0, MAX_OUTPUT - kept);
        chunks.push(part);
        kept += part.length;
      }
    }
    if (signal.aborted) return { ok: false, message: `Command timed out after ${timeoutMs} ms` };
    // Before close(): closing gives up on the exit code.
    code = await h.exitCode;
  } finally {
    signal.removeEventListener("abort", onAbort);
    h.close();
  }
  const output = new TextDecoder().decode(concatBytes(chunks)).trim();
  if (code === 0) return { ok: true, message: output };
  return {
    ok: false,
    message: `Command ${JSON.stringify(a.command)} exited with ${code}${
      output ? `: ${output}` : ""
    }`,
  };
}

async function httpAction(
  t: ActionTarget,
  a: HttpGetAction,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<ActionResult> {
  const https = a.scheme.toUpperCase() === "HTTPS";
  const host = a.host || t.address;
  if (!host) return { ok: false, message: "The pod has no IP address to probe" };
  // Loaded on the first httpGet action: node:http(s) bring Deno's Node compatibility layer,
  // memory a device without HTTP probes or hooks should not keep.
  const { request } = https ? await import("node:https") : await import("node:http");
  const headers: Record<string, string> = {
    "user-agent": "kube-probe/1.34",
    accept: "*/*",
    connection: "close",
  };
  for (const h of a.headers) headers[h.name.toLowerCase()] = h.value;
  const path = a.path ? (a.path.startsWith("/") ? a.path : `/${a.path}`) : "/";
  const url = `${https ? "https" : "http"}://${
    host.includes(":") ? `[${host}]` : host
  }:${a.port}${path}`;
  return new Promise((resolve) => {
    const opts = {
      method: "GET",
      headers,
      signal,
      timeout: timeoutMs,
      // A connection of its own per probe, as the kubelet's prober (keep-alives off): a pooled
      // connection could outlive the pod it reached, and pod IPs are reused at once on a bridge.
      agent: false,
      // The kubelet does not verify a probe's certificate either.
      rejectUnauthorized: false,
    };
    const req = request(url, opts, (res) => {
      const code = res.statusCode ?? 0;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        if (body.length < MAX_OUTPUT) body += d;
      });
      res.on("end", () => {
        if (code >= 200 && code < 400) resolve({ ok: true, message: "" });
        else {
          resolve({
            ok: false,
            message: `HTTP probe of "${url}" failed with statuscode: ${code}`,
          });
        }
      });
      res.on("error", (err) => resolve({ ok: false, message: errorMessage(err) }));
    });
    req.on("timeout", () => req.destroy(new Error(`Timed out after ${timeoutMs} ms`)));
    req.on("error", (err) => {
      resolve({
        ok: false,
        message: signal.aborted
          ? `Get "${url}": timed out after ${timeoutMs} ms`
          : `Get "${url}": ${errorMessage(err)}`,
      });
    });
    req.end();
  });
}

async function tcpAction(
  t: ActionTarget,
  a: TcpSocketAction,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<ActionResult> {
  const host = a.host || t.address;
  if (!host) return { ok: false, message: "The pod has no IP address to probe" };
  try {
    const conn = await Deno.connect({ hostname: host, port: a.port, signal });
    conn.close();
    return { ok: true, message: "" };
  } catch (err) {
    const why = signal.aborted ? `timed out after ${timeoutMs} ms` : errorMessage(err);
    return { ok: false, message: `dial tcp ${host}:${a.port}: ${why}` };
  }
}

async function grpcAction(
  t: ActionTarget,
  a: GrpcAction,
  timeoutMs: number,
): Promise<ActionResult> {
  if (!t.address) return { ok: false, message: "The pod has no IP address to probe" };
  // Loaded on first use: devices without gRPC probes never load the gRPC library.
  const grpc = await import("@grpc/grpc-js");
  const target = `${t.address.includes(":") ? `[${t.address}]` : t.address}:${a.port}`;
  // A connection of its own per probe, as the kubelet dials one: grpc-js would otherwise share
  // connections through its global pool, and a probe could ride one the server already dropped
  // ("read ECONNRESET", "Connection dropped": a failed liveness probe, a needless restart).
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
  });
  try {
    const status = await new Promise<HealthCheckResponse_ServingStatus>((resolve, reject) => {
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (m: { service: string }) =>
          Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, m))),
        (b: Buffer) => fromBinary(HealthCheckResponseSchema, b).status,
        { service: a.service },
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, value) => (err ? reject(err) : resolve(value!)),
      );
    });
    if (status === HealthCheckResponse_ServingStatus.SERVING) return { ok: true, message: "" };
    return {
      ok: false,
      message: `service unhealthy (responded with "${
        HealthCheckResponse_ServingStatus[status] ?? status
      }")`,
    };
  } catch (err) {
    return { ok: false, message: `gRPC health check of "${target}" failed: ${errorMessage(err)}` };
  } finally {
    client.close();
  }
}
