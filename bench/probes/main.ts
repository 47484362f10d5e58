/**
 * `deno task bench:probes`: do exec probes leave anything behind? Per engine
 * (Podman, dockerd), the real arhat process (its permission set) runs one
 * pod whose containers each have an exec readiness and an exec liveness
 * probe every second (the shipped probe code, nothing shortened); each probe
 * appends a line to a file in its container, so the number of probes that
 * ran is counted, not estimated. While they run we sample:
 *
 * - the engine's processes for the pod: conmon processes on the host
 *   (Podman runs one per container and per exec session) plus the processes
 *   inside the pod's containers (the engine's `top`);
 * - arhat's RSS.
 *
 * The figures compare the steady state early in the run (after the first
 * 10% of the probes) with the end: a leak grows with the probe count, a
 * healthy agent stays flat (Podman keeps an exec's conmon for its
 * exit_command_delay, 10 s in the test engine, so a steady number of them is
 * expected). `--probes N` (default 10000), `--containers N` (default 10),
 * `--engines podman,docker`.
 * The last line is one JSON object with a flat summary.
 */
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { CmdKind } from "@aranya/common/envelope";
import {
  PodDeleteCmdSchema,
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import { kill } from "@aranya/e2e/arhat_harness";
import { rssMB, startBenchArhat } from "../bench_arhat.ts";
import { useServices } from "@aranya/e2e/fixtures";
import { testTls } from "@aranya/e2e/link/test_tls";
import { EngineClient } from "@aranya/e2e/services/mod";
import { DockerRuntime } from "@aranya/arhat/runtime/docker/docker_runtime";
import { machineInfo } from "../machine.ts";
import { flatSummary } from "../summary.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    probes: { type: "string", default: "10000" },
    containers: { type: "string", default: "10" },
    "timeout-min": { type: "string", default: "60" },
    engines: { type: "string", default: "podman,docker" },
  },
});
const PROBES = Number(args.probes);
const CONTAINERS = Number(args.containers);
const say = (s: string) => console.error(`[bench:probes] ${s}`);
const dec = new TextDecoder();

async function run(cmd: string, argv: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args: argv, stdout: "piped", stderr: "null" }).output();
  return dec.decode(out.stdout);
}

interface Sample {
  probes: number;
  processes: number;
  rssMB: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
};

if (import.meta.main) {
  const deadline = Date.now() + Number(args["timeout-min"]) * 60_000;
  const services = await useServices();
  const tls = await testTls();
  const results: Record<string, Record<string, number>> = {};
  let failed = false;
  try {
    const engines = args.engines.split(",").filter((e): e is "podman" | "docker" =>
      e === "podman" || e === "docker"
    );
    for (const engine of engines) {
      const socket = engine === "podman"
        ? services.endpoints.podmanSocket
        : services.endpoints.dockerSocket;
      const { aranya, arhat } = await startBenchArhat({
        name: "probes",
        socket,
        image: services.endpoints.testImage,
        ca: tls.ca,
      });
      const engineApi = new EngineClient(socket);
      const runtime = new DockerRuntime({ socket });
      const uid = crypto.randomUUID();
      try {
        const c = await aranya.connected();
        const probe = {
          action: {
            case: "exec" as const,
            value: { command: ["sh", "-c", "echo . >> /tmp/probes"] },
          },
          periodSeconds: 1,
          // Generous: on a loaded 2-core machine an engine exec can take over a second, and a
          // liveness timeout would restart the container and end the count.
          timeoutSeconds: 10,
          failureThreshold: 3,
        };
        await c.request(
          CmdKind.CMD_POD_ENSURE,
          toBinary(
            PodEnsureCmdSchema,
            create(PodEnsureCmdSchema, {
              uid,
              namespace: "bench",
              name: "probed",
              restartPolicy: RestartPolicy.ALWAYS,
              specHash: "v1",
              terminationGraceSeconds: 1n,
              containers: Array.from({ length: CONTAINERS }, (_, i) => ({
                name: `c${i}`,
                image: services.endpoints.testImage,
                command: ["sleep", "3600000"],
                readinessProbe: probe,
                livenessProbe: probe,
              })),
            }),
          ),
        );
        const ids = async () => {
          const list = await engineApi.call(
            "GET",
            `/containers/json?filters=${
              encodeURIComponent(JSON.stringify({ label: [`arhat.dev/pod-uid=${uid}`] }))
            }`,
          ) as { Id: string; Labels: Record<string, string> }[];
          return list.filter((x) => x.Labels["arhat.dev/role"] === "app").map((x) => x.Id);
        };
        const allOf = async () => {
          const list = await engineApi.call(
            "GET",
            `/containers/json?filters=${
              encodeURIComponent(JSON.stringify({ label: [`arhat.dev/pod-uid=${uid}`] }))
            }`,
          ) as { Id: string }[];
          return list.map((x) => x.Id);
        };
        while ((await ids()).length < CONTAINERS) {
          if (Date.now() > deadline) throw new Error("the pod did not start in time");
          await new Promise((r) => setTimeout(r, 500));
        }
        const appIds = await ids();
        const allIds = await allOf();
        const countProbes = async () => {
          let n = 0;
          for (const id of appIds) {
            const h = await runtime.exec(id, {
              cmd: ["sh", "-c", "wc -l < /tmp/probes 2>/dev/null || echo 0"],
              stdout: true,
            });
            let text = "";
            for await (const chunk of h.output) text += dec.decode(chunk.data);
            await h.exitCode;
            h.close();
            n += Number(text.trim()) || 0;
          }
          return n;
        };
        const processes = async () => {
          // Live conmon processes of this pod's containers (Podman: one per container and per
          // exec session still held), plus the processes inside the containers.
          let n = 0;
          if (engine === "podman") {
            const ps = await run("ps", ["-e", "-o", "stat=,comm=,args="]);
            for (const line of ps.split("\n")) {
              const [stat, comm] = line.trim().split(/\s+/, 2);
              if (
                comm === "conmon" && !stat?.startsWith("Z") &&
                allIds.some((id) => line.includes(id))
              ) n++;
            }
          }
          for (const id of appIds) {
            const top = await engineApi.call("GET", `/containers/${id}/top`) as {
              Processes: unknown[] | null;
            } | null;
            if (!top) throw new Error(`container "${id}" is gone (restarted?)`);
            n += top.Processes?.length ?? 0;
          }
          return n;
        };
        const samples: Sample[] = [];
        const t0 = Date.now();
        for (;;) {
          if (Date.now() > deadline) {
            throw new Error("the probes did not reach their count in time");
          }
          await new Promise((r) => setTimeout(r, 5000));
          const s = {
            probes: await countProbes(),
            processes: await processes(),
            rssMB: await rssMB(arhat.child.pid),
          };
          samples.push(s);
          say(
            `${engine}: ${s.probes}/${PROBES} probes, ${s.processes} engine processes, arhat ${s.rssMB} MB`,
          );
          if (s.probes >= PROBES) break;
        }
        const early = samples.filter((s) => s.probes >= PROBES * 0.1 && s.probes <= PROBES * 0.3);
        const late = samples.slice(-Math.max(3, early.length));
        const first = early.length ? early : samples.slice(0, 3);
        const r = {
          probes: samples.at(-1)!.probes,
          probesPerSec: +(samples.at(-1)!.probes / ((Date.now() - t0) / 1000)).toFixed(1),
          processesEarly: median(first.map((s) => s.processes)),
          processesEnd: median(late.map((s) => s.processes)),
          rssEarlyMB: median(first.map((s) => s.rssMB)),
          rssEndMB: median(late.map((s) => s.rssMB)),
          rssGrowthPct: 0,
        };
        r.rssGrowthPct = +((r.rssEndMB / r.rssEarlyMB - 1) * 100).toFixed(1);
        results[engine] = r;
        say(
          `${engine}: ${r.probes} exec probes (${r.probesPerSec}/s); engine processes ${r.processesEarly} early -> ${r.processesEnd} at the end; arhat RSS ${r.rssEarlyMB} -> ${r.rssEndMB} MB (${r.rssGrowthPct}%)`,
        );
        const status = aranya.statuses.filter((s) => s.uid === uid).at(-1);
        if (status?.phase !== PodStatusMsg_Phase.RUNNING) {
          throw new Error(`the probed pod is not Running at the end (phase ${status?.phase})`);
        }
        await c.request(
          CmdKind.CMD_POD_DELETE,
          toBinary(PodDeleteCmdSchema, create(PodDeleteCmdSchema, { uid, graceSeconds: 1n })),
        );
      } catch (err) {
        failed = true;
        say(`${engine}: could not measure: ${(err as Error).message}`);
      } finally {
        engineApi.close();
        runtime.close();
        await kill(arhat);
        await aranya.stop();
      }
    }
  } finally {
    await services.release();
  }
  console.log(JSON.stringify({
    bench: "probes",
    summary: flatSummary(results),
    machine: machineInfo(),
    runs: 1,
    goal: "engine processes and arhat RSS at the end where they were early in the run",
    engines: results,
  }));
  Deno.exit(failed ? 1 : 0);
}
