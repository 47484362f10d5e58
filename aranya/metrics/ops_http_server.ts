/**
 * aranya's operations endpoint (plain HTTP, `http.listen`):
 *
 * - `GET /healthz`: 200 "ok" while the process serves at all (liveness);
 * - `GET /readyz`: 200 "ok" when the readiness function says so, else 503 with
 *   its reason as the body (a standby replica is alive but not ready);
 * - `GET /metrics`: the Prometheus text exposition of the registry.
 *
 * `HEAD` works like `GET` without a body; other methods get 405, other paths 404.
 *
 * @module
 */
import { errorMessage } from "@aranya/common/errors";
import { readySignal, type Runnable } from "@aranya/common/lifecycle";
import { type Logger, nullLogger } from "@aranya/common/log";

/** What /readyz reports. */
export type Readiness = { ready: true } | { ready: false; reason: string };

/** Where /metrics comes from (an `AranyaMetrics` fits). */
export interface MetricsSource {
  text(): Promise<string>;
  readonly contentType: string;
}

/** Options of {@link OpsHttpServer}. */
export interface OpsHttpServerOptions {
  /** Default "0.0.0.0". */
  hostname?: string;
  /** 0 picks a free port; read `port` after `ready`. */
  port: number;
  metrics: MetricsSource;
  /** Asked on every /readyz; a throw counts as not ready with the error as reason. */
  readiness: () => Readiness | Promise<Readiness>;
  log?: Logger;
}

const TEXT = "text/plain; charset=utf-8";

/** The /healthz, /readyz, /metrics server; see the module doc. */
export class OpsHttpServer implements Runnable {
  readonly #o: OpsHttpServerOptions;
  readonly #log: Logger;
  readonly #ready = readySignal();
  #port = 0;

  constructor(opts: OpsHttpServerOptions) {
    this.#o = opts;
    this.#log = (opts.log ?? nullLogger).with({ component: "ops-http" });
  }

  /** Resolves once the server listens; rejects when it cannot bind. */
  get ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** The bound port (after `ready`). */
  get port(): number {
    return this.#port;
  }

  /** Serves until `signal` aborts. Rejects when the address cannot be bound. */
  async run(signal: AbortSignal): Promise<void> {
    if (signal.aborted) {
      this.#ready.reject(new Error("Aborted before the ops HTTP server started"));
      return;
    }
    let server: Deno.HttpServer<Deno.NetAddr>;
    try {
      server = Deno.serve({
        hostname: this.#o.hostname ?? "0.0.0.0",
        port: this.#o.port,
        signal,
        onListen: () => {},
        onError: (err) => {
          this.#log.warn("ops request failed", { error: errorMessage(err) });
          return new Response("internal error\n", {
            status: 500,
            headers: { "content-type": TEXT },
          });
        },
      }, (req) => this.#handle(req));
    } catch (err) {
      this.#ready.reject(err);
      throw err;
    }
    this.#port = server.addr.port;
    this.#log.info("ops HTTP server listening", {
      hostname: server.addr.hostname,
      port: this.#port,
    });
    this.#ready.resolve();
    await server.finished;
  }

  async #handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    const head = req.method === "HEAD";
    if (!["/healthz", "/readyz", "/metrics"].includes(path)) {
      return text(404, "not found\n", head);
    }
    if (req.method !== "GET" && !head) {
      const r = text(405, "method not allowed\n", false);
      r.headers.set("allow", "GET, HEAD");
      return r;
    }
    switch (path) {
      case "/healthz":
        return text(200, "ok\n", head);
      case "/readyz": {
        let state: Readiness;
        try {
          state = await this.#o.readiness();
        } catch (err) {
          state = { ready: false, reason: `readiness check failed: ${errorMessage(err)}` };
        }
        return state.ready ? text(200, "ok\n", head) : text(503, `${state.reason}\n`, head);
      }
      default: {
        const body = await this.#o.metrics.text();
        return new Response(head ? null : body, {
          status: 200,
          headers: { "content-type": this.#o.metrics.contentType },
        });
      }
    }
  }
}

function text(status: number, body: string, head: boolean): Response {
  return new Response(head ? null : body, { status, headers: { "content-type": TEXT } });
}
