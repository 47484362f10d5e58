/**
 * Kubernetes pod behaviour on real Podman and real dockerd, through the pod
 * manager: the pod network (pod IP on the engine's default network, hostPort,
 * the pod IP in env), probes of every kind (exec, httpGet, tcpSocket, grpc;
 * startup gating liveness; liveness restarts with CrashLoopBackOff),
 * lifecycle hooks, termination messages and terminated reasons.
 */
import assert from "node:assert/strict";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "@aranya/proto/gen/aranya/health_pb";
import {
  type ContainerStatus,
  ContainerStatus_State,
  type PodEnsureCmd,
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import { eventually, useServices } from "@aranya/e2e/fixtures";
import { CACHE } from "@aranya/e2e/paths";
import { EngineClient } from "@aranya/e2e/services/mod";
import { DockerRuntime } from "../runtime/docker/docker_runtime.ts";
import { PodManager } from "./pod_manager.ts";
import { execText } from "./testing/exec_text.ts";
import type { PodStatusInit } from "./pod_status.ts";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

type Container = NonNullable<MessageInitShape<typeof PodEnsureCmdSchema>["containers"]>[number];

function pod(
  uid: string,
  containers: Container[],
  over: MessageInitShape<typeof PodEnsureCmdSchema> = {},
): PodEnsureCmd {
  return create(PodEnsureCmdSchema, {
    uid,
    namespace: "edge",
    name: `pod-${uid.slice(0, 6)}`,
    restartPolicy: RestartPolicy.ALWAYS,
    specHash: "v1",
    terminationGraceSeconds: 2n,
    containers,
    ...over,
  });
}

/** busybox httpd serving /www on `port`, with an index page. */
const httpd = (port: number) => [
  "sh",
  "-c",
  `mkdir -p /www && echo edge > /www/index.html && exec httpd -f -p ${port} -h /www`,
];

/** A grpc.health.v1 server on the host: "" serves, every other service does not. */
async function healthServer(): Promise<{ port: number; stop: () => Promise<void> }> {
  const server = new grpc.Server();
  server.addService({
    Check: {
      path: "/grpc.health.v1.Health/Check",
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: { service: string }) =>
        Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, m))),
      requestDeserialize: (b: Buffer) => fromBinary(HealthCheckRequestSchema, b),
      responseSerialize: (m: { status: HealthCheckResponse_ServingStatus }) =>
        Buffer.from(toBinary(HealthCheckResponseSchema, create(HealthCheckResponseSchema, m))),
      responseDeserialize: (b: Buffer) => fromBinary(HealthCheckResponseSchema, b),
    },
  }, {
    Check: (
      call: grpc.ServerUnaryCall<{ service: string }, unknown>,
      cb: grpc.sendUnaryData<{ status: HealthCheckResponse_ServingStatus }>,
    ) =>
      cb(null, {
        status: call.request.service === ""
          ? HealthCheckResponse_ServingStatus.SERVING
          : HealthCheckResponse_ServingStatus.NOT_SERVING,
      }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (err, p) => (err ? reject(err) : resolve(p)),
    )
  );
  return { port, stop: () => new Promise((r) => server.tryShutdown(() => r())) };
}

Deno.test("pod behaviour on real engines: network, probes, hooks, termination", async (t) => {
  const services = await useServices();
  const image = services.endpoints.testImage;
  const health = await healthServer();
  try {
    for (const engine of ["podman", "docker"] as const) {
      const socket = engine === "podman"
        ? services.endpoints.podmanSocket
        : services.endpoints.dockerSocket;
      const rt = new DockerRuntime({ socket });
      const stateDir = `${CACHE}/test-pods/${crypto.randomUUID()}`;
      const seen: PodStatusInit[] = [];
      const pm = new PodManager({
        runtime: rt,
        stateDir,
        infraImage: image,
        restartBackoff: { initialMs: 3000, maxMs: 6000 },
        syncIntervalMs: 300,
        onStatus: (s) => seen.push(s),
      });
      const ac = new AbortController();
      const running = pm.run(ac.signal);
      const uids: string[] = [];
      const uid = () => {
        const u = crypto.randomUUID();
        uids.push(u);
        return u;
      };
      const container = async (u: string, name: string): Promise<ContainerStatus | undefined> =>
        (await pm.status(u)).containers.find((c) => c.name === name) as
          | ContainerStatus
          | undefined;
      try {
        await t.step(
          `${engine}: pod IP on the default network, hostPort, pod IP in env`,
          async () => {
            const u = uid();
            const hostPort = freePort();
            await pm.ensure(pod(u, [{
              name: "web",
              image,
              command: httpd(8080),
              env: { POD_IP: "" },
              podIpEnv: ["POD_IP"],
              ports: [{ containerPort: 8080, hostPort, protocol: "TCP" }],
            }]));
            const s = await eventually("the pod to run with an IP", async () => {
              const st = await pm.status(u);
              return st.phase === PodStatusMsg_Phase.RUNNING && st.podIp ? st : undefined;
            }, 60_000);
            assert.match(s.podIp, engine === "podman" ? /^10\.88\./ : /^10\.89\./);
            const web = await pm.findContainer(u, "web");
            assert.equal(
              (await execText(rt, web.id, ["sh", "-c", "echo $POD_IP"])).trim(),
              s.podIp,
            );
            const viaPodIp = await eventually("the pod IP to answer", async () => {
              const r = await fetch(`http://${s.podIp}:8080/`).catch(() => undefined);
              return r?.ok ? await r.text() : undefined;
            }, 20_000);
            assert.equal(viaPodIp, "edge\n");
            const viaHostPort = await eventually("the hostPort to answer", async () => {
              const r = await fetch(`http://127.0.0.1:${hostPort}/`).catch(() => undefined);
              return r?.ok ? await r.text() : undefined;
            }, 20_000);
            assert.equal(viaHostPort, "edge\n");
            assert.equal(
              (await execText(rt, web.id, ["hostname"])).trim(),
              `pod-${u.slice(0, 6)}`,
              "app containers have the pod's hostname",
            );
            const hosts = await execText(rt, web.id, ["cat", "/etc/hosts"]);
            assert.match(hosts, /^# Kubernetes-managed hosts file\.\n/);
            assert.ok(hosts.includes(`${s.podIp}\t`), "the pod IP with the pod's hostname");
            const lo = await execText(rt, web.id, ["ip", "-o", "addr"]);
            assert.match(lo, /eth0/, "a pod on the default network has more than loopback");
          },
        );

        await t.step(`${engine}: a named network (runtime.podNetwork) and none`, async () => {
          const net = `aranya-e2e-${crypto.randomUUID().slice(0, 6)}`;
          const subnet = engine === "podman" ? "10.90.7.0/24" : "10.91.7.0/24";
          const api = new EngineClient(socket);
          await api.call("POST", "/networks/create", {
            json: { Name: net, IPAM: { Config: [{ Subnet: subnet }] } },
          });
          const named = new PodManager({
            runtime: rt,
            stateDir,
            infraImage: image,
            podNetwork: net,
          });
          const isolated = new PodManager({
            runtime: rt,
            stateDir,
            infraImage: image,
            podNetwork: "none",
          });
          const u1 = uid();
          const u2 = uid();
          try {
            await named.ensure(pod(u1, [{ name: "app", image, command: ["sleep", "3600"] }]));
            await isolated.ensure(pod(u2, [{ name: "app", image, command: ["sleep", "3600"] }]));
            const s1 = await eventually("an address on the named network", async () => {
              const st = await named.status(u1);
              return st.podIp ? st : undefined;
            }, 30_000);
            assert.ok(s1.podIp.startsWith(subnet.slice(0, subnet.lastIndexOf(".") + 1)), s1.podIp);
            assert.equal((await isolated.status(u2)).podIp, "", "no pod IP on the none network");
          } finally {
            await named.delete(u1, 0).catch(() => {});
            await isolated.delete(u2, 0).catch(() => {});
            await api.request("DELETE", `/networks/${net}`).then((r) => r.body?.cancel());
            api.close();
          }
        });

        await t.step(`${engine}: readiness by exec, httpGet and tcpSocket`, async () => {
          const u = uid();
          const fast = { periodSeconds: 1, failureThreshold: 1 };
          await pm.ensure(pod(u, [
            {
              name: "web",
              image,
              command: httpd(8081),
              readinessProbe: {
                action: { case: "httpGet", value: { port: 8081, path: "/ready", scheme: "HTTP" } },
                ...fast,
              },
              livenessProbe: {
                action: { case: "tcpSocket", value: { port: 8081 } },
                ...fast,
                failureThreshold: 3,
              },
            },
            {
              name: "never-ready",
              image,
              command: ["sleep", "3600"],
              readinessProbe: { action: { case: "exec", value: { command: ["false"] } }, ...fast },
            },
            {
              name: "closed-port",
              image,
              command: ["sleep", "3600"],
              readinessProbe: { action: { case: "tcpSocket", value: { port: 9 } }, ...fast },
            },
            { name: "plain", image, command: ["sleep", "3600"] },
          ]));
          await eventually("every container to run", async () => {
            const st = await pm.status(u);
            return st.containers.every((c) => c.state === ContainerStatus_State.RUNNING)
              ? true
              : undefined;
          }, 60_000);
          // Give the probes several periods: none of the probed ones may turn ready.
          await new Promise((r) => setTimeout(r, 3500));
          let st = await pm.status(u);
          const ready = Object.fromEntries(st.containers.map((c) => [c.name, c.ready]));
          assert.deepEqual(ready, {
            web: false,
            "never-ready": false,
            "closed-port": false,
            plain: true,
          });
          assert.ok(st.containers.every((c) => c.started), "no startup probe: started");
          const web = await pm.findContainer(u, "web");
          await execText(rt, web.id, ["sh", "-c", "echo ok > /www/ready"]);
          await eventually(
            "web to turn ready",
            async () => (await container(u, "web"))?.ready || undefined,
            15_000,
          );
          st = await pm.status(u);
          assert.equal(
            st.containers.find((c) => c.name === "web")?.restartCount,
            0,
            "liveness held",
          );
          await execText(rt, web.id, ["rm", "/www/ready"]);
          await eventually(
            "web to turn unready",
            async () => (await container(u, "web"))?.ready === false ? true : undefined,
            15_000,
          );
          assert.ok(
            seen.some((s) => s.uid === u && s.containers.find((c) => c.name === "web")?.ready),
            "the readiness change was reported",
          );
        });

        await t.step(
          `${engine}: grpc probes (hostNetwork pod, health server on the host)`,
          async () => {
            const u = uid();
            const grpcProbe = (service: string) => ({
              action: { case: "grpc" as const, value: { port: health.port, service } },
              periodSeconds: 1,
              failureThreshold: 1,
            });
            await pm.ensure(pod(u, [
              { name: "serving", image, command: ["sleep", "3600"], readinessProbe: grpcProbe("") },
              {
                name: "not-serving",
                image,
                command: ["sleep", "3600"],
                readinessProbe: grpcProbe("down"),
              },
            ], { hostNetwork: true }));
            await eventually(
              "the serving container to be ready",
              async () => (await container(u, "serving"))?.ready || undefined,
              30_000,
            );
            await new Promise((r) => setTimeout(r, 2000));
            assert.equal((await container(u, "not-serving"))?.ready, false);
          },
        );

        await t.step(
          `${engine}: startup gates liveness; liveness failure restarts with CrashLoopBackOff`,
          async () => {
            const gated = uid();
            await pm.ensure(pod(gated, [{
              name: "slow",
              image,
              command: ["sleep", "3600"],
              startupProbe: {
                action: { case: "exec", value: { command: ["test", "-f", "/tmp/started"] } },
                periodSeconds: 1,
                failureThreshold: 60,
              },
              livenessProbe: {
                action: { case: "exec", value: { command: ["test", "-f", "/tmp/started"] } },
                periodSeconds: 1,
                failureThreshold: 1,
              },
            }]));
            await eventually(
              "slow to run",
              async () =>
                (await container(gated, "slow"))?.state === ContainerStatus_State.RUNNING ||
                undefined,
              60_000,
            );
            await new Promise((r) => setTimeout(r, 3000));
            let slow = await container(gated, "slow");
            assert.equal(slow?.started, false);
            assert.equal(slow?.ready, false);
            assert.equal(slow?.restartCount, 0, "liveness must wait for the startup probe");
            const id = (await pm.findContainer(gated, "slow")).id;
            await execText(rt, id, ["touch", "/tmp/started"]);
            slow = await eventually("slow to be started and ready", async () => {
              const c = await container(gated, "slow");
              return c?.started && c.ready ? c : undefined;
            }, 15_000);
            assert.equal(slow.restartCount, 0);

            const dying = uid();
            await pm.ensure(pod(dying, [{
              name: "sick",
              image,
              command: ["sleep", "3600"],
              livenessProbe: {
                action: { case: "exec", value: { command: ["false"] } },
                periodSeconds: 1,
                failureThreshold: 2,
                terminationGracePeriodSeconds: 1n,
                hasTerminationGracePeriodSeconds: true,
              },
            }]));
            const looping = await eventually("CrashLoopBackOff after a liveness kill", async () => {
              const c = await container(dying, "sick");
              return c?.reason === "CrashLoopBackOff" ? c : undefined;
            }, 60_000);
            assert.equal(looping.state, ContainerStatus_State.WAITING);
            assert.match(looping.message, /^back-off \ds restarting failed container=sick pod=/);
            assert.ok(looping.lastTermination, "the previous end is reported");
            assert.notEqual(looping.lastTermination?.exitCode, 0);
            assert.equal((await pm.status(dying)).phase, PodStatusMsg_Phase.RUNNING);
            await eventually(
              "a second restart",
              async () => ((await container(dying, "sick"))?.restartCount ?? 0) >= 2 || undefined,
              60_000,
            );
          },
        );

        await t.step(`${engine}: one pod's long hook holds up no other pod`, async () => {
          const slow = uid();
          const quick = uid();
          // The slow pod's pass waits 45 s in its postStart hook.
          let slowDone = false;
          const slowEnsure = pm.ensure(pod(slow, [{
            name: "slow",
            image,
            command: ["sleep", "3600"],
            postStart: { action: { case: "exec", value: { command: ["sleep", "45"] } } },
          }])).finally(() => slowDone = true);
          await pm.ensure(pod(quick, [{
            name: "crasher",
            image,
            command: ["sh", "-c", "sleep 1; exit 1"],
          }]));
          // The restart after the 10 s back-off comes from the supervision loop's pass: it must
          // happen while the slow pod is still in its hook.
          await eventually("the other pod's container to restart", async () => {
            const s = await pm.status(quick);
            return (s.containers[0]?.restartCount ?? 0) >= 1 ? true : undefined;
          }, 90_000);
          assert.equal(slowDone, false, "the other pod restarted only after the slow hook ended");
          await slowEnsure;
          await pm.delete(slow, 0);
          await pm.delete(quick, 0);
        });

        await t.step(`${engine}: postStart and preStop hooks`, async () => {
          const u = uid();
          const hostDir = `${stateDir}/hooks-${u.slice(0, 6)}`;
          await Deno.mkdir(hostDir, { recursive: true });
          await pm.ensure(pod(u, [{
            name: "hooked",
            image,
            command: ["sleep", "3600"],
            mounts: [{ volume: "out", mountPath: "/out" }],
            postStart: {
              action: { case: "exec", value: { command: ["sh", "-c", "echo post > /out/post"] } },
            },
            preStop: {
              action: { case: "exec", value: { command: ["sh", "-c", "echo pre > /out/pre"] } },
            },
          }], { volumes: [{ name: "out", source: { case: "hostPath", value: hostDir } }] }));
          await eventually(
            "postStart to have run",
            async () =>
              (await Deno.readTextFile(`${hostDir}/post`).catch(() => "")) === "post\n" ||
              undefined,
            60_000,
          );
          await pm.delete(u, 5);
          assert.equal(
            await Deno.readTextFile(`${hostDir}/pre`),
            "pre\n",
            "preStop ran before the stop",
          );

          const failing = uid();
          await pm.ensure(pod(failing, [{
            name: "bad-hook",
            image,
            command: ["sleep", "3600"],
            postStart: { action: { case: "exec", value: { command: ["false"] } } },
          }], { restartPolicy: RestartPolicy.NEVER }));
          await eventually("a failed postStart to kill the container", async () => {
            const c = await container(failing, "bad-hook");
            return c?.state === ContainerStatus_State.TERMINATED ? c : undefined;
          }, 60_000);
        });

        await t.step(`${engine}: termination messages and terminated reasons`, async () => {
          const u = uid();
          await pm.ensure(pod(u, [
            {
              name: "file",
              image,
              command: ["sh", "-c", "echo bye > /dev/termination-log; exit 2"],
            },
            {
              name: "custom-path",
              image,
              command: ["sh", "-c", "echo custom > /tmp/msg; exit 0"],
              terminationMessagePath: "/tmp/msg",
            },
            {
              name: "from-logs",
              image,
              // The last line without its newline (Podman's own log tail would drop it).
              command: ["sh", "-c", "echo first; echo -n last words; exit 1"],
              terminationMessageFallbackToLogs: true,
            },
            {
              name: "logs-not-used",
              image,
              command: ["sh", "-c", "echo chatter; exit 0"],
              terminationMessageFallbackToLogs: true,
            },
            { name: "cannot-run", image, command: ["/no/such/binary"] },
          ], { restartPolicy: RestartPolicy.NEVER }));
          const st = await eventually("every container to end", async () => {
            const s = await pm.status(u);
            return s.containers.every((c) => c.state === ContainerStatus_State.TERMINATED)
              ? s
              : undefined;
          }, 60_000);
          const by = Object.fromEntries(st.containers.map((c) => [c.name, c]));
          assert.equal(by.file?.message, "bye\n");
          assert.equal(by.file?.reason, "Error");
          assert.equal(by.file?.exitCode, 2);
          assert.equal(by["custom-path"]?.message, "custom\n");
          assert.equal(by["custom-path"]?.reason, "Completed");
          assert.equal(by["from-logs"]?.message, "first\nlast words");
          assert.equal(by["logs-not-used"]?.message, "");
          assert.equal(by["cannot-run"]?.reason, "ContainerCannotRun");
          assert.notEqual(by["cannot-run"]?.exitCode, 0);
          assert.match(by["cannot-run"]?.message ?? "", /no\/such\/binary/);
          assert.equal(st.phase, PodStatusMsg_Phase.FAILED);
        });

        await t.step(
          `${engine}: emptyDir in memory is one tmpfs the containers share, kept across restarts`,
          async () => {
            const u = uid();
            const mem = { mounts: [{ volume: "mem", mountPath: "/mem" }] };
            await pm.ensure(pod(u, [
              { name: "a", image, command: ["sleep", "3600"], ...mem },
              { name: "b", image, command: ["sleep", "3600"], ...mem },
              {
                // Fails its first run; its restart must find the file the first run left.
                name: "again",
                image,
                command: [
                  "sh",
                  "-c",
                  'echo x >> /mem/runs; [ "$(wc -l < /mem/runs)" -ge 2 ] && exec sleep 3600; exit 1',
                ],
                ...mem,
              },
            ], {
              volumes: [{
                name: "mem",
                source: { case: "memoryDir", value: { sizeLimitBytes: 8n * 1024n * 1024n } },
              }],
            }));
            // "again" may be seen running in its first run, just before it exits: wait for it
            // to have been restarted.
            const st = await eventually("all three to run, again after a restart", async () => {
              const s = await pm.status(u);
              const again = s.containers.find((c) => c.name === "again");
              return s.containers.every((c) => c.state === ContainerStatus_State.RUNNING) &&
                  (again?.restartCount ?? 0) >= 1
                ? s
                : undefined;
            }, 60_000);
            assert.equal(
              st.containers.find((c) => c.name === "again")?.restartCount,
              1,
              "the tmpfs kept its files across the container's restart",
            );
            const a = await pm.findContainer(u, "a");
            const b = await pm.findContainer(u, "b");
            assert.match(
              await execText(rt, a.id, ["sh", "-c", "grep ' /mem ' /proc/mounts"]),
              /tmpfs/,
            );
            assert.equal((await execText(rt, a.id, ["stat", "-c", "%a", "/mem"])).trim(), "777");
            await execText(rt, a.id, ["sh", "-c", "echo shared > /mem/f"]);
            assert.equal(await execText(rt, b.id, ["cat", "/mem/f"]), "shared\n");
            await pm.delete(u, 0);
            const left = await rt.listContainers({ "arhat.dev/pod-uid": u });
            assert.equal(left.length, 0);
            const again = new EngineClient(socket);
            try {
              const vols = await again.call(
                "GET",
                `/volumes?filters=${
                  encodeURIComponent(JSON.stringify({ label: [`arhat.dev/pod-uid=${u}`] }))
                }`,
              ) as { Volumes: unknown[] | null };
              assert.deepEqual(vols.Volumes ?? [], [], "the pod's volume is removed with it");
            } finally {
              again.close();
            }
          },
        );

        await t.step(
          `${engine}: pod sysctls reach the containers; refused ones say why`,
          async () => {
            const u = uid();
            await pm.ensure(pod(u, [{ name: "app", image, command: ["sleep", "3600"] }], {
              sysctls: { "kernel.shm_rmid_forced": "1" },
            }));
            const app = await eventually("the pod to run", async () => {
              const s = await pm.status(u);
              return s.phase === PodStatusMsg_Phase.RUNNING
                ? await pm.findContainer(u, "app")
                : undefined;
            }, 60_000);
            assert.equal(
              (await execText(rt, app.id, ["cat", "/proc/sys/kernel/shm_rmid_forced"])).trim(),
              "1",
            );
            const bad = uid();
            await pm.ensure(pod(bad, [{ name: "app", image, command: ["sleep", "3600"] }], {
              sysctls: { "vm.swappiness": "10" }, // not namespaced: the engines refuse it
            }));
            const st = await eventually("the refusal", async () => {
              const s = await pm.status(bad);
              return s.containers[0]?.reason === "CreateContainerError" ? s : undefined;
            }, 30_000);
            assert.match(st.containers[0]?.message ?? "", /infra container failed/);
          },
        );

        await t.step(`${engine}: security context, fsGroup, OOM and pull back-off`, async () => {
          const u = uid();
          await pm.ensure(pod(u, [
            {
              name: "as-root",
              image,
              command: ["sleep", "3600"],
              runAsNonRoot: true,
            },
            {
              name: "as-user",
              image,
              command: ["sleep", "3600"],
              runAsNonRoot: true,
              runAsUser: 1000n,
              hasRunAsUser: true,
              supplementalGroups: [2000n],
              noNewPrivileges: true,
              // Unconfined seccomp takes effect; the SELinux label is the engine's to apply
              // (SELinux is off here, so it must be accepted without effect, as with a kubelet).
              securityOpts: ["seccomp=unconfined", "label=level:s0"],
              mounts: [
                { volume: "secret", mountPath: "/secret" },
                { volume: "scratch", mountPath: "/scratch" },
              ],
            },
            {
              name: "hungry",
              image,
              command: ["sh", "-c", 'x=$(head -c 64000000 /dev/zero | tr "\\0" a); echo survived'],
              memoryLimitBytes: 16n * 1024n * 1024n,
            },
            { name: "missing-image", image: "127.0.0.1:1/aranya-e2e/none:x", command: ["true"] },
          ], {
            restartPolicy: RestartPolicy.NEVER,
            hasFsGroup: true,
            fsGroup: 1234n,
            volumes: [
              {
                name: "secret",
                source: {
                  case: "data",
                  value: {
                    files: [{ path: "key", data: new TextEncoder().encode("s"), mode: 0o400 }],
                  },
                },
              },
              { name: "scratch", source: { case: "emptyDir", value: true } },
            ],
          }));
          const st = await eventually("as-user to run and hungry to end", async () => {
            const s = await pm.status(u);
            const by = Object.fromEntries(s.containers.map((c) => [c.name, c]));
            return by["as-user"]?.state === ContainerStatus_State.RUNNING &&
                by.hungry?.state === ContainerStatus_State.TERMINATED
              ? by
              : undefined;
          }, 60_000);
          assert.equal(st["as-root"]?.reason, "CreateContainerConfigError");
          assert.match(st["as-root"]?.message ?? "", /runAsNonRoot and image will run as root/);
          const user = await pm.findContainer(u, "as-user");
          assert.equal((await execText(rt, user.id, ["id", "-u"])).trim(), "1000");
          const groups = (await execText(rt, user.id, ["id", "-G"])).trim().split(" ");
          assert.ok(
            groups.includes("1234") && groups.includes("2000"),
            `fsGroup and supplementalGroups are supplementary groups; got ${groups}`,
          );
          assert.equal(
            (await execText(rt, user.id, ["stat", "-c", "%a %g", "/secret/key"])).trim(),
            "440 1234",
          );
          assert.equal(await execText(rt, user.id, ["cat", "/secret/key"]), "s");
          assert.equal(
            (await execText(rt, user.id, ["sh", "-c", "touch /scratch/f && stat -c %g /scratch/f"]))
              .trim(),
            "1234",
            "the emptyDir is writable and new files get the fsGroup",
          );
          assert.match(
            await execText(rt, user.id, ["grep", "NoNewPrivs", "/proc/self/status"]),
            /NoNewPrivs:\s+1/,
          );
          assert.match(
            await execText(rt, user.id, ["grep", "^Seccomp:", "/proc/self/status"]),
            /Seccomp:\s+0/,
            "seccomp=unconfined reaches the engine",
          );
          assert.equal(st.hungry?.exitCode, 137);
          // dockerd reports the OOM kill; Podman 4's compatible API (cgroup v1 here) reports only
          // the SIGKILL, so the kubelet's reason there is the plain "Error".
          assert.equal(st.hungry?.reason, engine === "docker" ? "OOMKilled" : "Error");
          assert.ok(
            seen.some((x) =>
              x.uid === u &&
              x.containers.some((c) => c.name === "missing-image" && c.reason === "ErrImagePull")
            ),
            "the failed pull was reported as ErrImagePull",
          );
          await eventually("ImagePullBackOff on the next pass", async () => {
            const c = await container(u, "missing-image");
            return c?.reason === "ImagePullBackOff" ? c : undefined;
          }, 10_000);
        });
      } finally {
        ac.abort();
        await running;
        for (const u of uids) await pm.delete(u, 0).catch(() => {});
        rt.close();
        await Deno.remove(stateDir, { recursive: true }).catch(() => {});
      }
    }
  } finally {
    await health.stop();
    await services.release();
  }
});
