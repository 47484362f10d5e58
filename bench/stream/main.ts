/**
 * `deno task bench:stream [--runs 5] [--round-trips 200] [--warmup 20] [--blob-mib 64]`:
 * the kubelet API's streams end to end, each against the container engine
 * reached directly. The chain measured: the built kubectl -> the real
 * kube-apiserver -> the real aranya process (deploy/ RBAC, kubelet API on
 * the advertised address) -> one arhat over its websocket link -> a
 * container on Podman, as in e2e/kubelet_e2e_test.ts. The control plane and
 * services come from `useCluster` / `useServices` (the running ones named by
 * ARANYA_TEST_KUBECONFIG and the ARANYA_TEST_* variables, else fresh ones,
 * stopped at the end, also on failure or SIGINT/SIGTERM).
 *
 * - exec round trip: one interactive `kubectl exec -i tools -c main -- cat`;
 *   a short line written, timed until it is back on stdout; --warmup untimed,
 *   then --round-trips timed; p50/p99. With KUBECTL_REMOTE_COMMAND_WEBSOCKETS
 *   true (kubectl's default, WebSocket to the API server) and false (SPDY).
 *   Anchor: the same echo through one exec session of the engine's own API
 *   (`/containers/{id}/exec` + hijacked `/exec/{id}/start` on the Podman
 *   socket), same counts.
 * - port-forward throughput: `kubectl port-forward pod/tools <local>:8080`,
 *   the pod's busybox httpd serving a random --blob-mib MiB blob, downloaded
 *   --runs times (after one untimed download), byte count checked, median
 *   MB/s; with KUBECTL_PORT_FORWARD_WEBSOCKETS true and false. Anchor: arhat
 *   runs pods with network "none" (only loopback inside the pod), so the pod
 *   has no IP the host can reach; the direct path is the one arhat itself
 *   uses, without anything above it: an engine exec of `nc 127.0.0.1 8080` in
 *   the pod's infra container, fed the same GET.
 *
 * Figures and machine info go to stdout, progress to stderr; the last line
 * on stdout is one JSON object with every figure.
 */
import { flatSummary } from "../summary.ts";
import { parseArgs } from "node:util";
import { errorMessage } from "../../common/errors.ts";
import { startKubeletDevice } from "../../e2e/kubelet_fixtures.ts";
import type { World } from "../../e2e/edge_world.ts";
import { inBenchWorld } from "../bench_world.ts";
import { eventually } from "../../e2e/fixtures.ts";
import { freePort } from "../../e2e/process.ts";
import { EchoTimer } from "./echo.ts";
import { engineExec, engineHttpGet, inPodHttpGet } from "./engine.ts";
import { kubectlCat, kubectlPortForward } from "./kubectl.ts";
import { type Latency, latency, mbPerSec, median, ratio, round, show, showRatio } from "./stats.ts";
import { machineInfo } from "../machine.ts";

const say = (s: string) => console.error(`[bench:stream] ${s}`);

function flags() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runs: { type: "string", default: "5" },
      "round-trips": { type: "string", default: "200" },
      warmup: { type: "string", default: "20" },
      "blob-mib": { type: "string", default: "64" },
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
  return {
    runs: count("runs", 1),
    roundTrips: count("round-trips", 1),
    warmup: count("warmup", 0),
    blobMiB: count("blob-mib", 1),
  };
}

/** Pod "tools": `main` idles (exec target), `web` serves /www/blob of `bytes` random bytes. */
function toolsPod(node: string, image: string, bytes: number): string {
  const c = (name: string, script: string) => ({
    name,
    image,
    imagePullPolicy: "IfNotPresent",
    command: ["sh", "-c", script],
  });
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "tools" },
    spec: {
      nodeName: node,
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 1,
      containers: [
        c("main", "while true; do sleep 3600; done"),
        c(
          "web",
          `mkdir -p /www && head -c ${bytes} /dev/urandom > /www/blob && ` +
            "wc -c < /www/blob > /www/blob.size && exec httpd -f -p 8080 -h /www",
        ),
      ],
    },
  });
}

/** Sets up aranya, one device on Podman and pod "tools"; returns what the measurements need. */
async function setUp(w: World, blobBytes: number) {
  const { node: name } = await startKubeletDevice(w, { logLevel: "warn" });
  say(`device ${w.ns}/${name} Ready; creating pod tools with a ${blobBytes}-byte blob`);
  await w.kubectl(["apply", "-f", "-"], toolsPod(name, w.services.endpoints.testImage, blobBytes));
  // deno-lint-ignore no-explicit-any
  const pod: any = await eventually("pod tools Running", async () => {
    const p = await w.json(["get", "pod", "tools"]);
    const running = (p.status?.containerStatuses ?? []).filter((
      c: { state?: { running?: unknown } },
    ) => c.state?.running);
    return running.length === 2 ? p : undefined;
  }, 120_000);
  const size = await eventually("the blob written", async () => {
    // -n before "--" (World.kubectl appends it, which would pass it to the command).
    const s = (await w.cluster.kubectlOk([
      "-n",
      w.ns,
      "exec",
      "tools",
      "-c",
      "web",
      "--",
      "cat",
      "/www/blob.size",
    ])).trim();
    return s ? Number(s) : undefined;
  }, 120_000);
  if (size !== blobBytes) throw new Error(`The blob has ${size} bytes, not ${blobBytes}`);
  const uid = pod.metadata.uid as string;
  const [main] = await w.engine.containers({
    "arhat.dev/pod-uid": uid,
    "arhat.dev/role": "app",
    "arhat.dev/container-name": "main",
  });
  const [infra] = await w.engine.containers({
    "arhat.dev/pod-uid": uid,
    "arhat.dev/role": "infra",
  });
  if (!main || !infra) throw new Error(`The engine has no main/infra container of pod ${uid}`);
  return { node: name, mainId: main.Id, infraId: infra.Id };
}

type ExecFigures = Latency & { ratioP50: number | null; ratioP99: number | null };

async function echoRun(
  open: () => Promise<ConstructorParameters<typeof EchoTimer>[0]>,
  tag: string,
  f: ReturnType<typeof flags>,
): Promise<number[]> {
  const timer = new EchoTimer(await open());
  try {
    return await timer.run(f.roundTrips, f.warmup, tag);
  } finally {
    await timer.close();
  }
}

async function download(url: string): Promise<{ bytes: number; ms: number; status: number }> {
  const t0 = performance.now();
  const res = await fetch(url, { signal: AbortSignal.timeout(300_000) });
  let bytes = 0;
  for await (const c of res.body!) bytes += c.length;
  return { bytes, ms: performance.now() - t0, status: res.status };
}

async function throughput(
  get: () => Promise<{ bytes: number; ms: number; status: number }>,
  blobBytes: number,
  runs: number,
  what: string,
): Promise<{ mbPerSec: number | null; runs: number[] }> {
  const out: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const r = await get();
    if (r.status !== 200 || r.bytes !== blobBytes) {
      throw new Error(`${what}: status ${r.status}, ${r.bytes} bytes instead of ${blobBytes}`);
    }
    if (i > 0) out.push(round(mbPerSec(r.bytes, r.ms), 4)!); // the first is a warm-up
  }
  return { mbPerSec: round(median(out), 4), runs: out };
}

async function measure(w: World, f: ReturnType<typeof flags>, errors: Record<string, string>) {
  const blobBytes = f.blobMiB << 20;
  const { mainId, infraId } = await setUp(w, blobBytes);
  const attempt = async <T>(key: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      errors[key] = errorMessage(err);
      say(`${key} failed: ${errorMessage(err)}`);
      return undefined;
    }
  };

  // exec round trips
  say(`exec: ${f.warmup} warm-up + ${f.roundTrips} round trips per path`);
  const direct = await attempt(
    "exec/direct",
    () => echoRun(() => engineExec(w.engine, mainId, ["cat"]), "direct", f),
  );
  const execOut: Record<string, Latency | ExecFigures> = {};
  const directLat = direct ? latency(direct) : undefined;
  if (directLat) execOut.direct = directLat;
  for (const [mode, ws] of [["websocket", "true"], ["spdy", "false"]] as const) {
    const s = await attempt(`exec/${mode}`, () =>
      echoRun(
        () =>
          Promise.resolve(
            kubectlCat(w, "tools", "main", { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: ws }),
          ),
        mode,
        f,
      ));
    if (!s) continue;
    const l = latency(s);
    execOut[mode] = {
      ...l,
      ratioP50: round(ratio(l.p50Ms, directLat?.p50Ms ?? null)),
      ratioP99: round(ratio(l.p99Ms, directLat?.p99Ms ?? null)),
    };
  }

  // port-forward throughput
  say(`port-forward: 1 warm-up + ${f.runs} downloads of ${blobBytes} bytes per path`);
  const pfOut: Record<string, unknown> = {};
  const pfDirect = await attempt("portForward/direct", () =>
    throughput(
      () => engineHttpGet(w.engine, infraId, 8080, "/blob"),
      blobBytes,
      f.runs,
      "direct",
    ));
  if (pfDirect) pfOut.direct = pfDirect;
  const inPod = await attempt("portForward/inPod", () =>
    throughput(
      () => inPodHttpGet(w.engine, mainId, 8080, "/blob"),
      blobBytes,
      f.runs,
      "in-pod",
    ));
  if (inPod) pfOut.inPod = inPod;
  for (const [mode, ws] of [["websocket", "true"], ["spdy", "false"]] as const) {
    const r = await attempt(`portForward/${mode}`, async () => {
      const pf = await kubectlPortForward(w, "pod/tools", freePort(), 8080, {
        KUBECTL_PORT_FORWARD_WEBSOCKETS: ws,
      });
      try {
        return await throughput(
          () => download(`http://127.0.0.1:${pf.localPort}/blob`),
          blobBytes,
          f.runs,
          mode,
        );
      } catch (err) {
        throw new Error(`${errorMessage(err)}; kubectl said: ${pf.output().trim().slice(-500)}`);
      } finally {
        await pf.stop();
      }
    });
    if (r) {
      pfOut[mode] = {
        ...r,
        ratio: round(ratio(r.mbPerSec, pfDirect?.mbPerSec ?? null)),
      };
    }
  }
  return { blobBytes, exec: execOut, portForward: pfOut };
}

function report(out: Awaited<ReturnType<typeof measure>>, f: ReturnType<typeof flags>): string[] {
  const lines: string[] = [];
  const d = out.exec.direct;
  lines.push(
    `exec round trip, direct (engine exec API on the Podman socket, one \`cat\` session): p50 ${
      show(d?.p50Ms ?? null, " ms")
    }, p99 ${show(d?.p99Ms ?? null, " ms")}`,
  );
  for (const mode of ["websocket", "spdy"]) {
    const e = out.exec[mode] as ExecFigures | undefined;
    lines.push(
      `exec round trip, kubectl exec -i (${mode}) -> API server -> aranya -> arhat -> Podman: p50 ${
        show(e?.p50Ms ?? null, " ms")
      } (${showRatio(e?.ratioP50 ?? null)} direct), p99 ${show(e?.p99Ms ?? null, " ms")} (${
        showRatio(e?.ratioP99 ?? null)
      } direct)`,
    );
  }
  const pd = out.portForward.direct as { mbPerSec: number | null } | undefined;
  lines.push(
    `port-forward download, direct (engine exec of \`nc 127.0.0.1 8080\` in the pod's infra container; the pod has no IP: network "none"): ${
      show(pd?.mbPerSec ?? null, " MB/s")
    }`,
  );
  const ip = out.portForward.inPod as { mbPerSec: number | null } | undefined;
  lines.push(
    `port-forward download, in-pod ceiling (wget over the pod's loopback, timed inside at 10 ms resolution; no host path): ${
      show(ip?.mbPerSec ?? null, " MB/s")
    }`,
  );
  for (const mode of ["websocket", "spdy"]) {
    const p = out.portForward[mode] as
      | { mbPerSec: number | null; ratio: number | null }
      | undefined;
    lines.push(
      `port-forward download, kubectl port-forward (${mode}) -> API server -> aranya -> arhat -> nc in the pod: ${
        show(p?.mbPerSec ?? null, " MB/s")
      } (${showRatio(p?.ratio ?? null)} direct)`,
    );
  }
  lines.push(
    `latency: ${f.warmup} warm-up then ${f.roundTrips} round trips per path in one session, p50/p99 of those; ` +
      `throughput: ${f.runs} download(s) of ${out.blobBytes} bytes per path after one warm-up, median MB/s (10^6 bytes/s); ` +
      `ratios: exec = kubectl / direct (slowdown), port-forward = kubectl / direct (fraction kept)`,
  );
  return lines;
}

if (import.meta.main) {
  const f = flags();
  const machine = machineInfo();
  const errors: Record<string, string> = {};
  const run = await inBenchWorld(say, (w) => measure(w, f, errors));
  const out = run.out;
  if (run.error) errors.setup = run.error;
  if (out) { for (const l of report(out, f)) console.log(l); }
  console.log(
    `machine: ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, deno ${machine.deno}; ` +
      `kubectl, the API server, etcd, aranya, arhat and Podman share it`,
  );
  console.log(JSON.stringify({
    bench: "stream",
    summary: out ? flatSummary({ exec: out.exec, portForward: out.portForward }) : {},
    machine,
    runs: f.runs,
    roundTrips: f.roundTrips,
    warmup: f.warmup,
    figures: "exec: p50/p99 of the round trips; portForward: median MB/s of the runs",
    ...(out ?? {}),
    ...(Object.keys(errors).length ? { errors } : {}),
  }));
  Deno.exit(Object.keys(errors).length ? 1 : 0);
}
