/**
 * arhat as a real process under its own permission set (deno.json
 * "permissions.arhat", exactly what `deno task arhat` and compile use),
 * against a real websocket link server playing aranya, on real Podman and
 * real dockerd: node info, pods with env and volumes, exec with stdin and an
 * exit code, logs, port-forward with a TCP echo, host exec refused by default
 * and allowed when configured, the offline scenario (link cut, arhat killed,
 * restarted without a link: pods still running, not duplicated, queued status
 * delivered after reconnect), and an access outside the permission set failing.
 */
import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { LABEL_POD_UID, LABEL_ROLE } from "@aranya/arhat/pods/labels";
import { DockerRuntime } from "@aranya/arhat/runtime/docker/docker_runtime";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { ExitCodeError, ForbiddenError } from "@aranya/common/errors";
import { SessionClient } from "@aranya/common/session/session_client";
import { NodeStatusMsgSchema } from "@aranya/proto/gen/aranya/node_pb";
import {
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import {
  ExecCmdSchema,
  LogsCmdSchema,
  PortForwardCmdSchema,
} from "@aranya/proto/gen/aranya/stream_pb";
import { arhatConfig, type ArhatProc, FakeAranya, kill, spawnArhat } from "./arhat_harness.ts";
import { eventually, useServices } from "./fixtures.ts";
import { EngineClient } from "./services/engine_client.ts";
import { testTls } from "./link/test_tls.ts";
import { ROOT } from "./paths.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const streamText = async (
  c: SessionClient,
  kind: CmdKind,
  payload: Uint8Array,
  input?: string,
): Promise<{ out: string; err: string; code: number }> => {
  let out = "";
  let err = "";
  const s = c.stream(kind, payload, {
    onStdout: (d) => out += dec(d),
    onStderr: (d) => err += dec(d),
  });
  await s.ready;
  if (input !== undefined) {
    await s.write(enc(input));
    await s.closeWrite();
  }
  // Read the output only after the session ended: it is still arriving until then.
  let code: number;
  try {
    code = (await s.done).exitCode;
  } catch (e) {
    if (!(e instanceof ExitCodeError)) throw e;
    code = e.exitCode;
  }
  return { out, err, code };
};

for (
  const engine of (["podman", "docker"] as const).filter((e) =>
    (Deno.env.get("ARANYA_TEST_ENGINES") ?? "podman,docker").includes(e)
  )
) {
  Deno.test({
    name: `arhat end to end on ${engine}`,
    // The arhat child's output pumps outlive single steps; everything is stopped in finally.
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (t) => {
      const services = await useServices();
      const socket = engine === "podman"
        ? services.endpoints.podmanSocket
        : services.endpoints.dockerSocket;
      const image = services.endpoints.testImage;
      const tls = await testTls();
      const base = `${ROOT}/.cache/arhat-e2e/${crypto.randomUUID().slice(0, 8)}`;
      await Deno.mkdir(base, { recursive: true });
      const stateDir = `${base}/state`;
      // arhat may read only what its permission set allows: keep its files under its folder.
      await Deno.writeTextFile(`${base}/ca.crt`, tls.ca);
      const cfg = (allowHost: boolean) =>
        arhatConfig({
          socket,
          image,
          stateDir,
          port: aranya.port,
          ca: `${base}/ca.crt`,
          allowHost,
          logDir: `${base}/hostlogs`,
        });
      const aranya = new FakeAranya();
      const runtime = new DockerRuntime({ socket });
      let arhat: ArhatProc | undefined;
      const podUid = crypto.randomUUID();
      const flakyUid = crypto.randomUUID();
      const engineClient = new EngineClient(socket);
      /** Starts busybox httpd in the pod's "app" container on `listen` ("[ip:]port"), serving /cfg. */
      const startHttpd = async (listen: string) => {
        const r = await streamText(
          aranya.client!,
          CmdKind.CMD_EXEC,
          toBinary(
            ExecCmdSchema,
            create(ExecCmdSchema, {
              podUid,
              container: "app",
              command: ["httpd", "-p", listen, "-h", "/cfg"],
              stdout: true,
              stderr: true,
            }),
          ),
        );
        assert.equal(r.code, 0, r.err);
      };
      /** The exec sessions the engine holds for the pod's infra container. */
      const infraExecs = async (): Promise<string[]> => {
        const [infra] = (await runtime.listContainers({ [LABEL_POD_UID]: podUid }))
          .filter((x) => x.labels[LABEL_ROLE] === "infra");
        assert.ok(infra, "the pod's infra container");
        const j = await engineClient.call("GET", `/containers/${infra.id}/json`) as {
          ExecIDs: string[] | null;
        };
        return j.ExecIDs ?? [];
      };
      try {
        await aranya.start();
        await Deno.writeTextFile(`${base}/config.yaml`, cfg(false));
        arhat = spawnArhat(`${base}/config.yaml`);
        const c = await aranya.connected();

        await t.step("node info", async () => {
          const r = await c.request(CmdKind.CMD_NODE_INFO_GET, new Uint8Array());
          const s = fromBinary(NodeStatusMsgSchema, r.payload);
          assert.equal(s.systemInfo?.arch, "amd64");
          assert.equal(s.systemInfo?.os, "linux");
          assert.ok(s.systemInfo?.runtimeName, "runtime name reported");
          assert.ok((s.capacity?.memoryBytes ?? 0n) > 0n);
        });

        await t.step("a pod with env and a volume runs", async () => {
          const cmd = create(PodEnsureCmdSchema, {
            uid: podUid,
            namespace: "edge",
            name: "echo",
            restartPolicy: RestartPolicy.ALWAYS,
            specHash: "v1",
            terminationGraceSeconds: 2n,
            volumes: [{
              name: "cfg",
              source: {
                case: "data",
                value: {
                  files: [{ path: "greeting", data: enc("hi from a volume"), mode: 0o444 }],
                },
              },
            }],
            containers: [{
              name: "app",
              image,
              env: { ROLE: "edge-echo" },
              command: [
                "sh",
                "-c",
                "echo started $ROLE; cat /cfg/greeting; echo; nc -ll -p 8080 -e cat",
              ],
              mounts: [{ volume: "cfg", mountPath: "/cfg", readOnly: true }],
            }, {
              name: "stdin-cat",
              image,
              command: ["cat"],
              stdin: true,
            }, {
              name: "ticker",
              image,
              command: ["sh", "-c", "while :; do echo tick; sleep 1; done"],
            }],
          });
          const r = await c.request(CmdKind.CMD_POD_ENSURE, toBinary(PodEnsureCmdSchema, cmd));
          assert.equal(r.kind, MsgKind.MSG_POD_STATUS);
          await eventually("the pod to run", async () => {
            const list = await c.request(CmdKind.CMD_POD_LIST, new Uint8Array());
            assert.equal(list.kind, MsgKind.MSG_POD_STATUS_LIST);
            return aranya.statuses.some((s) =>
                s.uid === podUid && s.phase === PodStatusMsg_Phase.RUNNING
              )
              ? true
              : undefined;
          }, 60_000);
        });

        await t.step("exec with stdin and a non-zero exit code", async () => {
          const r = await streamText(
            c,
            CmdKind.CMD_EXEC,
            toBinary(
              ExecCmdSchema,
              create(ExecCmdSchema, {
                podUid,
                container: "app",
                command: ["sh", "-c", "cat; echo oops >&2; exit 4"],
                stdin: true,
                stdout: true,
                stderr: true,
              }),
            ),
            "piped through\n",
          );
          assert.equal(r.out, "piped through\n");
          assert.equal(r.err, "oops\n");
          assert.equal(r.code, 4);
        });

        await t.step("logs", async () => {
          const r = await eventually("log lines", async () => {
            const x = await streamText(
              c,
              CmdKind.CMD_LOGS,
              toBinary(
                LogsCmdSchema,
                create(LogsCmdSchema, { podUid, container: "app", tailLines: -1n }),
              ),
            );
            return x.out.includes("hi from a volume") ? x : undefined;
          }, 30_000);
          assert.match(r.out, /started edge-echo/);
        });

        await t.step("logs: tail, timestamps and follow", async () => {
          const tail = await streamText(
            c,
            CmdKind.CMD_LOGS,
            toBinary(
              LogsCmdSchema,
              create(LogsCmdSchema, {
                podUid,
                container: "ticker",
                tailLines: 1n,
                timestamps: true,
              }),
            ),
          );
          const lines = tail.out.trimEnd().split("\n");
          assert.equal(lines.length, 1, tail.out);
          assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z? tick$/);
          let out = "";
          const follow = c.stream(
            CmdKind.CMD_LOGS,
            toBinary(
              LogsCmdSchema,
              create(LogsCmdSchema, { podUid, container: "ticker", follow: true, tailLines: 1n }),
            ),
            { onStdout: (d) => out += dec(d) },
          );
          await eventually(
            "three ticks while following",
            () => Promise.resolve((out.match(/tick/g)?.length ?? 0) >= 3 ? true : undefined),
            20_000,
          );
          follow.cancel();
        });

        await t.step("attach to a container's stdin and stdout", async () => {
          let out = "";
          const s = c.stream(
            CmdKind.CMD_ATTACH,
            toBinary(
              ExecCmdSchema,
              create(ExecCmdSchema, { podUid, container: "stdin-cat", stdin: true, stdout: true }),
            ),
            { onStdout: (d) => out += dec(d) },
          );
          await s.ready;
          await s.write(enc("through attach\n"));
          await eventually(
            "the echo",
            () => Promise.resolve(out.includes("through attach") ? true : undefined),
            20_000,
          );
          s.cancel();
        });

        await t.step("port-forward into the pod carries a TCP echo", async () => {
          let out = "";
          const s = c.stream(
            CmdKind.CMD_PORT_FORWARD,
            toBinary(PortForwardCmdSchema, create(PortForwardCmdSchema, { podUid, port: 8080 })),
            { onStdout: (d) => out += dec(d) },
          );
          await s.ready;
          const payload = "x".repeat(100_000) + "\n";
          await s.write(enc(payload));
          await eventually(
            "the echo",
            () => Promise.resolve(out.length >= payload.length ? true : undefined),
            30_000,
          );
          assert.equal(out, payload);
          // arhat dialled the pod's address itself: no exec session in the engine.
          assert.deepEqual(await infraExecs(), [], "exec sessions of the infra container");
          s.cancel();
        });

        await t.step(
          "a server on the pod's loopback only is forwarded from inside the pod",
          async () => {
            await startHttpd("127.0.0.1:8081");
            let out = "";
            const s = c.stream(
              CmdKind.CMD_PORT_FORWARD,
              toBinary(PortForwardCmdSchema, create(PortForwardCmdSchema, { podUid, port: 8081 })),
              { onStdout: (d) => out += dec(d) },
            );
            await s.ready;
            // Nothing listens on the pod's address: arhat forwards through an exec in the pod
            // (seen while it runs: dockerd forgets an exec once it ended).
            assert.ok((await infraExecs()).length >= 1, "an exec session in the infra container");
            await s.write(enc("GET /greeting HTTP/1.0\r\n\r\n"));
            await eventually(
              "the page",
              () => Promise.resolve(out.includes("hi from a volume") ? true : undefined),
              30_000,
            );
            assert.match(out, /^HTTP\/1\.[01] 200/);
            s.cancel();
          },
        );

        await t.step("a server that closes after its answer ends the forward", async () => {
          await startHttpd("8082");
          // Podman still lists the previous step's finished exec for exit_command_delay.
          const execsBefore = await infraExecs();
          let out = "";
          const s = c.stream(
            CmdKind.CMD_PORT_FORWARD,
            toBinary(PortForwardCmdSchema, create(PortForwardCmdSchema, { podUid, port: 8082 })),
            { onStdout: (d) => out += dec(d) },
          );
          await s.ready;
          // Our input stays open: the server's close (HTTP/1.0) alone must end the session.
          await s.write(enc("GET /greeting HTTP/1.0\r\n\r\n"));
          let timer: ReturnType<typeof setTimeout> | undefined;
          const ended = await Promise.race([
            s.done.then(() => true),
            new Promise<false>((r) => timer = setTimeout(() => r(false), 15_000)),
          ]).finally(() => clearTimeout(timer));
          assert.ok(ended, `the forward did not end when the server closed; got ${out.length} B`);
          assert.match(out, /^HTTP\/1\.[01] 200[\s\S]*hi from a volume/);
          // Forwarded directly: no new exec session in the engine.
          const added = (await infraExecs()).filter((id) => !execsBefore.includes(id));
          assert.deepEqual(added, [], "new exec sessions of the infra container");
        });

        await t.step("host attach, logs and port-forward are refused by default", async () => {
          await assert.rejects(
            streamText(
              c,
              CmdKind.CMD_ATTACH,
              toBinary(
                ExecCmdSchema,
                create(ExecCmdSchema, { container: "host", stdin: true, stdout: true }),
              ),
            ),
            (e) => e instanceof ForbiddenError && /host\.allowAttach/.test(e.message),
          );
          await assert.rejects(
            streamText(
              c,
              CmdKind.CMD_LOGS,
              toBinary(LogsCmdSchema, create(LogsCmdSchema, { container: "host", path: "syslog" })),
            ),
            (e) => e instanceof ForbiddenError && /host\.allowLogs/.test(e.message),
          );
          await assert.rejects(
            streamText(
              c,
              CmdKind.CMD_PORT_FORWARD,
              toBinary(PortForwardCmdSchema, create(PortForwardCmdSchema, { port: 22 })),
            ),
            (e) => e instanceof ForbiddenError && /host\.allowPortForward/.test(e.message),
          );
        });

        await t.step("exec with a tty gets the requested terminal size", async () => {
          const r = await streamText(
            c,
            CmdKind.CMD_EXEC,
            toBinary(
              ExecCmdSchema,
              create(ExecCmdSchema, {
                podUid,
                container: "app",
                command: ["sh", "-c", "sleep 1; stty size"],
                tty: true,
                stdout: true,
                cols: 123,
                rows: 45,
              }),
            ),
          );
          assert.match(r.out, /45 123/);
        });

        await t.step("host exec is refused by default", async () => {
          await assert.rejects(
            streamText(
              c,
              CmdKind.CMD_EXEC,
              toBinary(
                ExecCmdSchema,
                create(ExecCmdSchema, { container: "host", command: ["id"], stdout: true }),
              ),
            ),
            (e) => e instanceof ForbiddenError && /host\.allowExec/.test(e.message),
          );
        });

        await t.step(
          "offline: pods keep running, come back without duplicates, queued status arrives",
          async () => {
            // A pod whose container fails every few seconds: its restarts happen while offline.
            await c.request(
              CmdKind.CMD_POD_ENSURE,
              toBinary(
                PodEnsureCmdSchema,
                create(PodEnsureCmdSchema, {
                  uid: flakyUid,
                  namespace: "edge",
                  name: "flaky",
                  restartPolicy: RestartPolicy.ON_FAILURE,
                  specHash: "v1",
                  terminationGraceSeconds: 1n,
                  containers: [{
                    name: "app",
                    image,
                    command: ["sh", "-c", "echo attempt; sleep 3; exit 1"],
                  }],
                }),
              ),
            );
            const before = await runtime.listContainers({ [LABEL_POD_UID]: podUid });
            const beforeIds = before.filter((x) => x.state === "running").map((x) => x.id).sort();
            // Cut the link, then kill arhat hard and start it again with no link.
            await aranya.stop();
            await kill(arhat, "SIGKILL");
            await Deno.writeTextFile(`${base}/config.yaml`, cfg(true));
            arhat = spawnArhat(`${base}/config.yaml`);
            await new Promise((r) => setTimeout(r, 8000));
            const during = await runtime.listContainers({ [LABEL_POD_UID]: podUid });
            assert.deepEqual(
              during.filter((x) => x.state === "running").map((x) => x.id).sort(),
              beforeIds,
            );
            assert.equal(during.length, before.length, "no duplicated containers");
            const seenBefore = aranya.statuses.length;
            await aranya.start();
            const c2 = await aranya.connected();
            await eventually("queued status of the flaky pod", () =>
              Promise.resolve(
                aranya.statuses.slice(seenBefore).some((s) => s.uid === flakyUid && s.restarts >= 1)
                  ? true
                  : undefined,
              ), 60_000);
            const previous = await streamText(
              c2,
              CmdKind.CMD_LOGS,
              toBinary(
                LogsCmdSchema,
                create(LogsCmdSchema, { podUid: flakyUid, container: "app", previous: true }),
              ),
            );
            assert.equal(
              previous.out,
              "attempt\n",
              "logs --previous shows the instance before the restart",
            );
            const r = await c2.request(CmdKind.CMD_POD_LIST, new Uint8Array());
            assert.equal(r.kind, MsgKind.MSG_POD_STATUS_LIST);
            // This instance allows host exec.
            const host = await streamText(
              c2,
              CmdKind.CMD_EXEC,
              toBinary(
                ExecCmdSchema,
                create(ExecCmdSchema, {
                  container: "host",
                  command: ["echo", "host-ok"],
                  stdout: true,
                }),
              ),
            );
            assert.equal(host.out.trim(), "host-ok");
            // Host logs and port-forward, now allowed.
            await Deno.mkdir(`${base}/hostlogs`, { recursive: true });
            await Deno.writeTextFile(`${base}/hostlogs/device.log`, "booted\nready\n");
            const logs = await streamText(
              c2,
              CmdKind.CMD_LOGS,
              toBinary(
                LogsCmdSchema,
                create(LogsCmdSchema, { container: "host", path: "device.log" }),
              ),
            );
            assert.equal(logs.out, "booted\nready\n");
            await assert.rejects(
              streamText(
                c2,
                CmdKind.CMD_LOGS,
                toBinary(
                  LogsCmdSchema,
                  create(LogsCmdSchema, { container: "host", path: "../config.yaml" }),
                ),
              ),
              /must name a file under/,
            );
            const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
            (async () => {
              for await (const conn of echo) conn.readable.pipeTo(conn.writable).catch(() => {});
            })();
            try {
              let out = "";
              const pf = c2.stream(
                CmdKind.CMD_PORT_FORWARD,
                toBinary(
                  PortForwardCmdSchema,
                  create(PortForwardCmdSchema, { port: (echo.addr as Deno.NetAddr).port }),
                ),
                { onStdout: (d) => out += dec(d) },
              );
              await pf.ready;
              await pf.write(enc("to the host\n"));
              await eventually(
                "the host echo",
                () => Promise.resolve(out === "to the host\n" ? true : undefined),
                20_000,
              );
              pf.cancel();
            } finally {
              echo.close();
            }
          },
        );

        await t.step("an access outside arhat's permission set fails", async () => {
          await Deno.writeTextFile(
            `${base}/bad.yaml`,
            cfg(false).replace(`stateDir: ${stateDir}`, "stateDir: /root/arhat-not-allowed"),
          );
          const bad = spawnArhat(`${base}/bad.yaml`);
          const status = await bad.child.status;
          assert.notEqual(status.code, 0);
          assert.match(bad.output(), /NotCapable|Requires (read|write) access/);
        });
      } finally {
        await kill(arhat);
        const cc = aranya.client;
        for (const uid of [podUid, flakyUid]) {
          const left = await runtime.listContainers({ [LABEL_POD_UID]: uid }).catch(() => []);
          for (const x of left.filter((x) => x.labels["arhat.dev/role"] !== "infra")) {
            await runtime.removeContainer(x.id).catch(() => {});
          }
          for (const x of left.filter((x) => x.labels["arhat.dev/role"] === "infra")) {
            await runtime.removeContainer(x.id).catch(() => {});
          }
        }
        void cc;
        engineClient.close();
        await aranya.stop();
        runtime.close();
        await services.release();
        if (arhat && !arhat.output().includes("arhat stopped")) {
          console.error(arhat.output().split("\n").slice(-15).join("\n"));
        }
      }
    },
  });
}
