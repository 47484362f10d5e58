/**
 * `deno task bench:flood [--seconds 60] [--connections 32]`: aranya under a
 * flood of bad credentials on every listener while one real device stays
 * connected. The chain: the real control plane, the real aranya process
 * (deploy/ RBAC and admission policies, its shipped defaults: API 50/100,
 * caller budget 20/40, heartbeat 10 s, Lease 40 s), one real arhat on
 * Podman over websocket.
 *
 * For `--seconds`, `--connections` workers per listener, each in a loop:
 * - websocket: an upgrade naming a random unknown device, or the real device
 *   with a wrong token (every other attempt), refused with 4401;
 * - gRPC: a Sync call naming the real device with a wrong token, refused with
 *   UNAUTHENTICATED;
 * - kubelet API: `GET /pods` on the device's node port with a random bearer
 *   token (each a TokenReview on the caller budget), refused with 401 (or 503
 *   when the budget is spent).
 * Meanwhile the device's Lease (kube-node-lease) and Node are read every
 * 250 ms from the admin's connection.
 *
 * Figures: refusals per second per listener; the renewals seen and the
 * largest gap between two renewals, beside the heartbeat it should equal
 * (goal: no gap above 1.5 heartbeats, i.e. no missed renewal); whether the
 * Node stayed Ready. The last stdout line is one JSON object with a flat
 * `summary`. Exits 1 when it could not measure.
 */
import https from "node:https";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { CoordinationV1Api, CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import { errorMessage } from "@aranya/common/errors";
import { GrpcLinkDialer } from "@aranya/arhat/connectivity/grpc/grpc_link_dialer";
import { aranyaConfigYaml, waitAranyaReady } from "@aranya/e2e/aranya_harness";
import { websocketMethod } from "@aranya/e2e/edge_fixtures";
import type { World } from "@aranya/e2e/edge_world";
import { inBenchWorld } from "../bench_world.ts";
import { uniqueName } from "@aranya/e2e/fixtures";
import { advertisedAddress } from "@aranya/e2e/kubelet_fixtures";
import { freePort } from "@aranya/e2e/process";
import { machineInfo } from "../machine.ts";

const say = (s: string) => console.error(`[bench:flood] ${s}`);

/** The shipped node timers (aranya's defaults, which deploy/ does not override). */
const HEARTBEAT_MS = 10_000;

function flags() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seconds: { type: "string", default: "60" },
      connections: { type: "string", default: "32" },
    },
    strict: true,
  });
  const count = (name: keyof typeof values, min: number) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${name}: "${values[name]}" is not a whole number >= ${min}`);
    }
    return n;
  };
  return { seconds: count("seconds", 5), connections: count("connections", 1) };
}

interface Counts {
  attempts: number;
  refused: number;
  /** Answers other than a refusal (accepted, or an unexpected error). */
  other: number;
  lastOther?: string;
}

/** Runs `n` workers of `attempt` until `deadline`. */
async function flood(
  n: number,
  deadline: number,
  attempt: () => Promise<"refused" | string>,
): Promise<Counts> {
  const c: Counts = { attempts: 0, refused: 0, other: 0 };
  await Promise.all(Array.from({ length: n }, async () => {
    while (Date.now() < deadline) {
      c.attempts++;
      try {
        const r = await attempt();
        if (r === "refused") c.refused++;
        else {
          c.other++;
          c.lastOther = r;
        }
      } catch (err) {
        c.other++;
        c.lastOther = errorMessage(err);
      }
      // Yield to timers and I/O: an attempt that fails at once must not starve the event loop.
      await new Promise((r) => setTimeout(r, 0));
    }
  }));
  return c;
}

function wsAttempt(
  port: number,
  ca: string,
  device: string,
  token: string,
): Promise<"refused" | string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://localhost:${port}/v1/link`, {
      headers: { "X-Arhat-Device": device, Authorization: `Bearer ${token}` },
      ca,
      handshakeTimeout: 10_000,
    });
    ws.on("error", (err) => resolve(`error: ${err.message}`));
    ws.on("close", (code) => resolve(code === 4401 ? "refused" : `close ${code}`));
  });
}

async function grpcAttempt(port: number, device: string, ca: string): Promise<"refused" | string> {
  try {
    const link = await new GrpcLinkDialer({
      target: `localhost:${port}`,
      device,
      token: crypto.randomUUID(),
      tls: { ca },
      acceptTimeoutMs: 10_000,
    }).dial(AbortSignal.timeout(15_000));
    link.close();
    return "accepted";
  } catch (err) {
    return /unauthenticated|credentials/i.test(errorMessage(err))
      ? "refused"
      : `error: ${errorMessage(err)}`;
  }
}

function kubeletAttempt(port: number, agent: https.Agent): Promise<"refused" | string> {
  return new Promise((resolve) => {
    const req = https.request({
      host: "127.0.0.1",
      port,
      path: "/pods",
      agent,
      headers: { Authorization: `Bearer ${crypto.randomUUID()}` },
      timeout: 15_000,
    }, (res) => {
      res.resume();
      res.on("end", () =>
        resolve(
          res.statusCode === 401 || res.statusCode === 503 ? "refused" : `HTTP ${res.statusCode}`,
        ));
    });
    req.on("error", (err) => resolve(`error: ${err.message}`));
    req.end();
  });
}

async function measure(w: World, f: ReturnType<typeof flags>) {
  const wsPort = freePort();
  const grpcPort = freePort();
  const httpPort = freePort();
  const kubeletPort = freePort();
  const aranya = await w.startAranya(aranyaConfigYaml({
    kubeconfig: w.kubeconfig,
    namespaces: [w.ns],
    httpPort,
    websocket: { port: wsPort, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
    grpc: { port: grpcPort, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
    kubelet: { address: advertisedAddress(), port: kubeletPort, portCount: 1 },
    logLevel: "error",
  }));
  await waitAranyaReady(aranya, httpPort);
  const dev = uniqueName("dev");
  const token = await w.createDevice(dev);
  await w.startArhat(dev, websocketMethod(wsPort, token, `${w.arhatDir}/ca.crt`));
  await w.nodeReady(dev, "True");
  const node = JSON.parse(await w.cluster.kubectlOk(["get", "node", dev, "-o", "json"]));
  const nodePort: number = node.status.daemonEndpoints.kubeletEndpoint.Port;
  say(`device ${w.ns}/${dev} Ready; flooding for ${f.seconds} s, ${f.connections} workers each`);

  const kc = new KubeConfig();
  kc.loadFromFile(w.cluster.kubeconfig);
  const leases = kc.makeApiClient(CoordinationV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const renewals: number[] = [];
  let notReady = 0;
  let samples = 0;
  let sampling = true;
  const sampler = (async () => {
    let last = "";
    while (sampling) {
      try {
        const l = await leases.readNamespacedLease({ name: dev, namespace: "kube-node-lease" });
        const t = String(l.spec?.renewTime ?? "");
        if (t && t !== last) {
          renewals.push(new Date(t).getTime());
          last = t;
        }
        const n = await core.readNode({ name: dev });
        samples++;
        const ready = n.status?.conditions?.find((c) => c.type === "Ready")?.status;
        if (ready !== "True") notReady++;
      } catch { /* counted as no sample */ }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  const started = Date.now();
  const deadline = started + f.seconds * 1000;
  // The kubelet API's certificate is signed by the cluster CA for the advertised address.
  const view = JSON.parse(
    await w.cluster.kubectlOk(["config", "view", "--raw", "--minify", "-o", "json"]),
  );
  const clusterCa = atob(view.clusters[0].cluster["certificate-authority-data"]);
  // The bench reaches 127.0.0.1 only: the certificate names the advertised address, so its name
  // is not checked (its chain is).
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: f.connections,
    ca: clusterCa,
    checkServerIdentity: () => undefined,
  });
  let wsToggle = 0;
  const [ws, grpc, kubelet] = await Promise.all([
    flood(f.connections, deadline, () =>
      wsAttempt(
        wsPort,
        w.tls.ca,
        ++wsToggle % 2 ? `${w.ns}/${dev}` : `${w.ns}/ghost-${crypto.randomUUID().slice(0, 8)}`,
        crypto.randomUUID(),
      )),
    flood(f.connections, deadline, () => grpcAttempt(grpcPort, `${w.ns}/${dev}`, w.tls.ca)),
    flood(f.connections, deadline, () => kubeletAttempt(nodePort, agent)),
  ]);
  const elapsed = (Date.now() - started) / 1000;
  agent.destroy();
  // One more heartbeat after the flood, so a renewal delayed to its end is seen.
  await new Promise((r) => setTimeout(r, HEARTBEAT_MS + 1000));
  sampling = false;
  await sampler;
  const inFlood = renewals.filter((t) => t >= started - HEARTBEAT_MS);
  const gaps = inFlood.slice(1).map((t, i) => t - inFlood[i]!);
  const maxGapMs = gaps.length ? Math.max(...gaps) : null;
  const missed = gaps.filter((g) => g > HEARTBEAT_MS * 1.5).length;
  const rate = (c: Counts) => Math.round(c.refused / elapsed);
  return {
    elapsed,
    ws,
    grpc,
    kubelet,
    rate,
    renewals: inFlood.length,
    maxGapMs,
    missed,
    notReady,
    samples,
  };
}

if (import.meta.main) {
  const f = flags();
  const machine = machineInfo();
  const run = await inBenchWorld(say, (w) => measure(w, f));
  const out = run.out;
  let error = run.error;
  if (out) {
    for (
      const [name, c] of [["websocket", out.ws], ["gRPC", out.grpc], [
        "kubelet API",
        out.kubelet,
      ]] as const
    ) {
      console.log(
        `${name}: ${
          out.rate(c)
        } refusals/s absorbed (${c.refused} of ${c.attempts} attempts refused` +
          (c.other ? `; ${c.other} other answers, last: ${c.lastOther}` : "") + ")",
      );
    }
    console.log(
      `Lease renewals during the flood: ${out.renewals}, largest gap ${out.maxGapMs ?? "n/a"} ms ` +
        `(heartbeat ${HEARTBEAT_MS} ms, ratio ${
          out.maxGapMs === null ? "n/a" : (out.maxGapMs / HEARTBEAT_MS).toFixed(2)
        }); missed renewals (gap > 1.5 heartbeats): ${out.missed}; ` +
        `Node not Ready in ${out.notReady} of ${out.samples} samples`,
    );
  }
  console.log(
    `machine: ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, deno ${machine.deno}; ` +
      `one run of ${f.seconds} s with ${f.connections} workers per listener; the flood, aranya, ` +
      `arhat, the API server and etcd share the machine`,
  );
  const measured = out !== undefined && out.renewals >= 2;
  if (out && !measured) error = `only ${out.renewals} Lease renewal(s) seen: run longer`;
  console.log(JSON.stringify({
    bench: "flood",
    summary: out
      ? {
        seconds: f.seconds,
        workersPerListener: f.connections,
        websocketRefusalsPerSec: out.rate(out.ws),
        grpcRefusalsPerSec: out.rate(out.grpc),
        kubeletRefusalsPerSec: out.rate(out.kubelet),
        unexpectedAnswers: out.ws.other + out.grpc.other + out.kubelet.other,
        leaseRenewals: out.renewals,
        maxRenewalGapMs: out.maxGapMs,
        heartbeatMs: HEARTBEAT_MS,
        missedRenewals: out.missed,
        nodeNotReadySamples: out.notReady,
      }
      : {},
    machine,
    ...(error ? { error } : {}),
  }));
  Deno.exit(error ? 1 : 0);
}
