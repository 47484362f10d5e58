/**
 * bench:arhat's footprint measurement, on what we ship: the real aranya
 * (deploy/aranya's production config, link_idle.ts) and one arhat per
 * transport as shipped (shipped_arhat.ts: the bundle under its permission set
 * and V8 flags, as the launcher and `deno compile` run it), each device with
 * one pod running on Podman, all idle at once; arhat's RSS is sampled over
 * the window and the last sample is the idle figure.
 *
 * The bundle's DENO_DIR is warmed once before the devices start (the bundle
 * loaded and left at once): a first `deno run` with an empty DENO_DIR parses
 * the bundle for its dependency analysis and keeps about 45 MB of that for
 * the process's life; a device's launcher does it once after install (its
 * DENO_DIR persists), a compiled binary never. `first_start_rss_mb` is that
 * cold start, measured on the websocket device's bundle beside.
 *
 * Then, on the websocket device: RSS with `pods` pods running, and the RSS
 * growth after `sessions` `kubectl exec` sessions and `sessions`
 * port-forward connections, with the engine's conmon processes counted before
 * and after (those left behind).
 */
import { waitAranyaReady } from "@aranya/e2e/aranya_harness";
import { binPath } from "@aranya/e2e/cluster/build";
import type { World } from "@aranya/e2e/edge_world";
import { uniqueName } from "@aranya/e2e/fixtures";
import { errorMessage } from "@aranya/common/errors";
import { freePort, isAlive } from "@aranya/e2e/process";
import { type Broker, startMosquitto } from "@aranya/e2e/services/mosquitto";
import { rssMB } from "./bench_arhat.ts";
import type { LinkTransport } from "./link_active.ts";
import { productionAranyaConfig } from "./link_idle.ts";
import { buildShippedArhat } from "./shipped_arhat.ts";
import { type ShippedDevice, shippedDeviceReady, startShippedDevice } from "./shipped_device.ts";

/** Options of {@link measureFootprint}. */
export interface FootprintOptions {
  transports: LinkTransport[];
  /** Quiet time after every pod runs, seconds. */
  settleSeconds: number;
  /** The idle window over which RSS is sampled, seconds. */
  windowSeconds: number;
  /** Pods for the RSS-with-pods figure (0: not measured). */
  pods: number;
  /** exec sessions and port-forward connections for the growth figures (0: not measured). */
  sessions: number;
  /** arhat's V8 flags instead of the shipped ones (to measure them). */
  v8Flags?: readonly string[];
  /** Where the bundle and logs go. */
  dir: string;
  say: (line: string) => void;
}

/** What {@link measureFootprint} returns (flat, snake case). */
export interface FootprintResult {
  /** Per transport: RSS at the end of the idle window, MB. */
  idle_rss_mb: Partial<Record<LinkTransport, number>>;
  /** Per transport: the largest sample in the window, MB. */
  idle_rss_max_mb: Partial<Record<LinkTransport, number>>;
  /** The websocket device started with an empty DENO_DIR (see the module doc), MB. */
  first_start_rss_mb?: number;
  idle_window_s: number;
  /** `pods` pods running on the websocket device, MB. */
  rss_mb_pods?: number;
  pods?: number;
  rss_growth_pct_execs?: number;
  rss_growth_pct_port_forwards?: number;
  sessions?: number;
  /** exec sessions that failed (the engine's first error is logged). */
  exec_failures?: number;
  /** Port-forward connections that got no complete response (10 s each at most). */
  port_forward_failures?: number;
  /** conmon processes more than before the sessions, a few seconds after they ended. */
  engine_processes_left?: number;
  v8_flags: readonly string[];
  /** The figures that could not be measured, and why. */
  errors?: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Counts the engine's session helpers (conmon) in this PID namespace. */
async function conmonCount(): Promise<number> {
  const out = await new Deno.Command("ps", { args: ["-e", "-o", "stat=,comm="], stdout: "piped" })
    .output();
  // Zombies are not counted: they hold no memory, and where nothing reaps orphans (PID 1 of a
  // private PID namespace that is not an init) every exited conmon stays one.
  return new TextDecoder().decode(out.stdout).split("\n").map((l) => l.trim().split(/\s+/))
    .filter(([stat = "", comm]) => comm === "conmon" && !stat.startsWith("Z")).length;
}

/** Runs `n` calls of `f`, `width` at a time. */
async function pool(n: number, width: number, f: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) await f(next++);
    }),
  );
}

/** A pod on device `node` running `command` in the test image. */
function podJson(name: string, node: string, image: string, command: string): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { app: name, bench: "footprint" } },
    spec: {
      nodeSelector: { "arhat.dev/name": node },
      tolerations: [{ key: "arhat.dev/namespace", operator: "Exists", effect: "NoSchedule" }],
      terminationGracePeriodSeconds: 1,
      containers: [{
        name: "app",
        image,
        imagePullPolicy: "IfNotPresent",
        command: ["sh", "-c", command],
      }],
    },
  });
}

const IDLE_POD = "trap 'exit 0' TERM; while :; do sleep 1; done";

/** One HTTP/1.0 GET through a local port; resolves with whether a response came and ended. */
async function fetchOnce(port: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n"));
    const buf = new Uint8Array(4096);
    const t = setTimeout(() => conn.close(), 10_000);
    let got = 0;
    try {
      for (let n; (n = await conn.read(buf)) !== null;) got += n;
    } finally {
      clearTimeout(t);
    }
    return got > 0;
  } catch {
    return false; // timed out or refused: counted as a failed connection
  } finally {
    try {
      conn.close();
    } catch { /* closed by the timeout */ }
  }
}

/** Runs the footprint measurement in `w` (see the module doc); stops what it started. */
export async function measureFootprint(w: World, o: FootprintOptions): Promise<FootprintResult> {
  const say = o.say;
  const undo: (() => Promise<unknown>)[] = [];
  try {
    const bundle = await buildShippedArhat(`${o.dir}/arhat-bundle`, { v8Flags: o.v8Flags });
    await bundle.warm();
    const httpPort = freePort();
    const websocketPort = freePort();
    const grpcPort = freePort();
    let broker: Broker | undefined;
    let mqtt: Parameters<typeof productionAranyaConfig>[0]["mqtt"];
    if (o.transports.includes("mqtt")) {
      const adminPassword = crypto.randomUUID();
      broker = await startMosquitto({});
      const b = broker;
      undo.push(() => b.stop());
      const passwordFile = `${w.dir}/mqtt-password`;
      await Deno.writeTextFile(passwordFile, adminPassword, { mode: 0o600 });
      mqtt = {
        broker: `mqtt://${broker.address}`,
        username: "aranya",
        passwordFile,
        dynamicSecurity: false,
      };
    }
    const aranya = await w.startAranya(
      await productionAranyaConfig({
        kubeconfig: w.kubeconfig,
        namespace: w.ns,
        httpPort,
        kubeletPort: freePort(),
        websocketPort,
        grpcPort,
        certFile: `${w.dir}/tls.crt`,
        keyFile: `${w.dir}/tls.key`,
        mqtt,
      }),
    );
    await waitAranyaReady(aranya, httpPort);
    say(`aranya ready; arhat's V8 flags: ${bundle.v8Flags.join(" ") || "none"}`);

    const devices: ShippedDevice[] = [];
    undo.push(async () => {
      await w.cluster.kubectl(["delete", "namespace", w.ns, "--ignore-not-found", "--wait=false"]);
      await w.cluster.kubectl(["wait", "--for=delete", `namespace/${w.ns}`, "--timeout=60s"]);
      await Promise.allSettled(devices.map((d) => d.proc.stop()));
      for (const d of devices) {
        await Deno.copyFile(d.proc.logFile, `${o.dir}/arhat-${d.transport}.log`).catch(() => {});
        await Deno.remove(d.dir, { recursive: true }).catch(() => {});
      }
    });
    for (const transport of o.transports) {
      const name = uniqueName(`fp-${transport}`);
      devices.push(
        await startShippedDevice(w, bundle, {
          transport,
          name,
          websocketPort,
          grpcPort,
          broker,
          // Room for the pods of the RSS-with-pods figure (the CRD's default allocatable is 10).
          podAllocatable: 110,
        }),
      );
    }
    for (const d of devices) {
      await shippedDeviceReady(w, d);
      await w.kubectl(
        ["apply", "-f", "-"],
        podJson(`idle-${d.transport}`, d.name, w.services.endpoints.testImage, IDLE_POD),
      );
    }
    for (const d of devices) await w.runningPod(`app=idle-${d.transport}`, 120_000);
    say(`${devices.length} devices Ready with one pod each; settling ${o.settleSeconds} s`);
    await sleep(o.settleSeconds * 1000);

    const max = new Map<LinkTransport, number>();
    const last = new Map<LinkTransport, number>();
    const started = Date.now();
    const every = Math.min(30_000, Math.max(1000, o.windowSeconds * 100));
    for (;;) {
      for (const d of devices) {
        if (!isAlive(d.proc.pid)) throw new Error(`${d.transport}: arhat exited during the window`);
        const r = await rssMB(d.proc.pid);
        last.set(d.transport, r);
        max.set(d.transport, Math.max(max.get(d.transport) ?? 0, r));
      }
      // The series, so growth over the window shows in the log.
      const at = Math.round((Date.now() - started) / 1000);
      say(`t=${at}s RSS ${[...last].map(([t, r]) => `${t} ${r} MB`).join(", ")}`);
      if (Date.now() - started >= o.windowSeconds * 1000) break;
      await sleep(every);
    }
    const out: FootprintResult = {
      idle_rss_mb: Object.fromEntries(last),
      idle_rss_max_mb: Object.fromEntries(max),
      idle_window_s: Math.round((Date.now() - started) / 1000),
      v8_flags: bundle.v8Flags,
    };
    for (const d of devices) {
      say(`${d.transport}: idle RSS ${last.get(d.transport)} MB (max ${max.get(d.transport)} MB)`);
    }

    const ws = devices.find((d) => d.transport === "websocket");
    // The figures below are measured one by one: one that fails is reported, the others stay.
    const step = async (what: string, f: () => Promise<void>) => {
      try {
        await f();
      } catch (err) {
        const pods = await w.kubectl(["get", "pods", "-o", "wide"]).catch(() => "");
        say(`${what}: could not measure: ${errorMessage(err)}\n${pods}`);
        (out.errors ??= []).push(`${what}: ${errorMessage(err)}`);
      }
    };
    if (ws && o.pods > 0) {
      await step(`${o.pods} pods`, async () => {
        for (let i = 0; i < o.pods; i++) {
          await w.kubectl(
            ["apply", "-f", "-"],
            podJson(`many-${i}`, ws.name, w.services.endpoints.testImage, IDLE_POD),
          );
        }
        for (let i = 0; i < o.pods; i++) await w.runningPod(`app=many-${i}`, 300_000);
        await sleep(Math.min(30_000, o.settleSeconds * 1000));
        out.rss_mb_pods = await rssMB(ws.proc.pid);
        out.pods = o.pods;
        say(`websocket: ${o.pods} more pods Running: RSS ${out.rss_mb_pods} MB`);
        await w.kubectl(["delete", "pods", "-l", "bench=footprint,app!=idle-websocket", "--wait"])
          .catch(() => {});
      });
    }
    if (ws && o.sessions > 0) {
      await step(`${o.sessions} sessions`, async () => {
        const pod = "fp-sessions";
        await w.kubectl(
          ["apply", "-f", "-"],
          podJson(pod, ws.name, w.services.endpoints.testImage, "exec httpd -f -p 8080 -h /"),
        );
        await w.runningPod(`app=${pod}`, 120_000);
        await sleep(5000);
        const conmonBefore = await conmonCount();
        const before = await rssMB(ws.proc.pid);
        let execFailures = 0;
        await pool(o.sessions, 8, async () => {
          const r = await w.cluster.kubectl(["-n", w.ns, "exec", pod, "--", "true"]);
          if (r.code !== 0 && execFailures++ === 0) {
            say(`a kubectl exec failed: ${r.stderr.trim().slice(0, 300)}`);
          }
        });
        out.exec_failures = execFailures;
        await sleep(5000);
        const afterExecs = await rssMB(ws.proc.pid);
        out.rss_growth_pct_execs = +((afterExecs / before - 1) * 100).toFixed(1);
        say(`websocket: ${o.sessions} execs: RSS ${before} -> ${afterExecs} MB`);

        const local = freePort();
        let failed = 0;
        const pf = new Deno.Command(binPath("kubectl"), {
          args: [
            `--kubeconfig=${w.cluster.kubeconfig}`,
            "-n",
            w.ns,
            "port-forward",
            pod,
            `${local}:8080`,
          ],
          stdout: "null",
          stderr: "null",
        }).spawn();
        try {
          await sleep(2000);
          await pool(o.sessions, 8, async () => {
            if (!await fetchOnce(local)) failed++;
          });
        } finally {
          pf.kill("SIGTERM");
          await pf.status;
        }
        await sleep(5000);
        const afterForwards = await rssMB(ws.proc.pid);
        out.rss_growth_pct_port_forwards = +((afterForwards / afterExecs - 1) * 100).toFixed(1);
        out.sessions = o.sessions;
        out.port_forward_failures = failed;
        await sleep(10_000);
        out.engine_processes_left = Math.max(0, (await conmonCount()) - conmonBefore);
        say(
          `websocket: ${o.sessions} port-forward connections: RSS ${afterExecs} -> ` +
            `${afterForwards} MB (${failed} failed); conmon processes left: ${out.engine_processes_left}`,
        );
      });
    }

    // The first start after install: the same bundle with an empty DENO_DIR (see the module doc).
    if (ws) {
      await step("first start", async () => {
        const coldDir = `${o.dir}/arhat-bundle-cold-${crypto.randomUUID().slice(0, 8)}`;
        undo.push(() => Deno.remove(coldDir, { recursive: true }));
        const cold = await buildShippedArhat(coldDir, { v8Flags: o.v8Flags });
        const name = uniqueName("fp-cold");
        const d = await startShippedDevice(w, cold, {
          transport: "websocket",
          name,
          websocketPort,
          grpcPort,
          podAllocatable: 110,
        });
        devices.push(d);
        await w.nodeReady(name, "True", 120_000);
        await sleep(o.settleSeconds * 1000);
        out.first_start_rss_mb = await rssMB(d.proc.pid);
        say(`websocket, first start with an empty DENO_DIR: RSS ${out.first_start_rss_mb} MB`);
      });
    }
    return out;
  } finally {
    for (const f of undo.reverse()) await f().catch((e) => say(`cleaning up: ${e}`));
  }
}
