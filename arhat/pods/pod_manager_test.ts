/**
 * The pod manager against real Podman and real dockerd: env and volumes seen
 * inside the container, init containers first, restart policies, deletion,
 * no duplicates after an agent restart, and a clear ErrImagePull.
 */
import assert from "node:assert/strict";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ContainerStatus_State,
  type PodEnsureCmd,
  PodEnsureCmdSchema,
  PodStatusMsg_Phase,
  RestartPolicy,
} from "@aranya/proto/gen/aranya/pod_pb";
import { eventually, useServices } from "@aranya/e2e/fixtures";
import { CACHE } from "@aranya/e2e/paths";
import { registryImage, TEST_IMAGE_TAG } from "@aranya/e2e/services/mod";
import { DockerRuntime } from "../runtime/docker/docker_runtime.ts";
import { LABEL_POD_UID } from "./labels.ts";
import { PodManager } from "./pod_manager.ts";
import { execText } from "./testing/exec_text.ts";

function pod(
  uid: string,
  image: string,
  over: MessageInitShape<typeof PodEnsureCmdSchema> = {},
): PodEnsureCmd {
  return create(PodEnsureCmdSchema, {
    uid,
    namespace: "edge",
    name: `pod-${uid.slice(0, 6)}`,
    restartPolicy: RestartPolicy.ALWAYS,
    specHash: "v1",
    terminationGraceSeconds: 2n,
    containers: [{ name: "app", image, command: ["sh", "-c", "sleep 3600"] }],
    ...over,
  });
}

Deno.test("pod manager on real engines", async (t) => {
  const services = await useServices();
  const image = services.endpoints.testImage;
  try {
    for (const engine of ["podman", "docker"] as const) {
      const socket = engine === "podman"
        ? services.endpoints.podmanSocket
        : services.endpoints.dockerSocket;
      const rt = new DockerRuntime({ socket });
      const stateDir = `${CACHE}/test-pods/${crypto.randomUUID()}`;
      const statuses: { uid: string; phase: PodStatusMsg_Phase }[] = [];
      const pm = new PodManager({
        runtime: rt,
        stateDir,
        infraImage: image,
        restartBackoff: { initialMs: 200, maxMs: 400 },
        syncIntervalMs: 200,
        onStatus: (s) => statuses.push({ uid: s.uid, phase: s.phase }),
      });
      const ac = new AbortController();
      const running = pm.run(ac.signal);
      const uids: string[] = [];
      const uid = () => {
        const u = crypto.randomUUID();
        uids.push(u);
        return u;
      };
      try {
        await t.step(`${engine}: env, volumes and init containers`, async () => {
          const u = uid();
          await pm.ensure(pod(u, image, {
            volumes: [
              {
                name: "config",
                source: {
                  case: "data",
                  value: {
                    files: [{
                      path: "app.conf",
                      data: new TextEncoder().encode("answer=42\n"),
                      mode: 0o440,
                    }],
                  },
                },
              },
              { name: "scratch", source: { case: "emptyDir", value: true } },
            ],
            initContainers: [{
              name: "init",
              image,
              command: ["sh", "-c", "echo init-ran > /work/marker"],
              mounts: [{ volume: "scratch", mountPath: "/work" }],
            }],
            containers: [{
              name: "app",
              image,
              command: ["sh", "-c", "sleep 3600"],
              env: { GREETING: "hello edge" },
              mounts: [
                {
                  volume: "config",
                  mountPath: "/etc/app/app.conf",
                  subPath: "app.conf",
                  readOnly: true,
                },
                { volume: "scratch", mountPath: "/work" },
              ],
            }],
          }));
          const s = await eventually("the pod to run", async () => {
            const st = await pm.status(u);
            return st.phase === PodStatusMsg_Phase.RUNNING ? st : undefined;
          }, 60_000);
          assert.equal(
            s.containers.find((c) => c.name === "init")?.state,
            ContainerStatus_State.TERMINATED,
          );
          const app = await pm.findContainer(u, "app");
          assert.equal(
            (await execText(rt, app.id, ["sh", "-c", "echo $GREETING"])).trim(),
            "hello edge",
          );
          assert.equal(await execText(rt, app.id, ["cat", "/etc/app/app.conf"]), "answer=42\n");
          assert.equal(
            (await execText(rt, app.id, ["stat", "-c", "%a", "/etc/app/app.conf"])).trim(),
            "440",
          );
          assert.equal((await execText(rt, app.id, ["cat", "/work/marker"])).trim(), "init-ran");
          const ro = await execText(rt, app.id, [
            "sh",
            "-c",
            "echo x > /etc/app/app.conf 2>&1; echo rc=$?",
          ]);
          assert.match(ro, /rc=[1-9]/, "a readOnly mount must refuse writes");
          // The app joined the infra container's network namespace.
          const infra = await pm.infraOf(u);
          const nsApp = await execText(rt, app.id, ["readlink", "/proc/self/ns/net"]);
          const nsInfra = await execText(rt, infra.id, ["readlink", "/proc/self/ns/net"]);
          assert.equal(nsApp.trim(), nsInfra.trim());
        });

        await t.step(`${engine}: the pod's resolv.conf from its DNS settings`, async () => {
          const u = uid();
          await pm.ensure(pod(u, image, {
            dnsServers: ["10.53.0.10", "10.53.0.11"],
            dnsSearches: ["svc.edge.test", "edge.test"],
            dnsOptions: ["ndots:2"],
          }));
          await eventually("the pod to run", async () => {
            const st = await pm.status(u);
            return st.phase === PodStatusMsg_Phase.RUNNING ? st : undefined;
          }, 60_000);
          const app = await pm.findContainer(u, "app");
          assert.equal(
            await execText(rt, app.id, ["cat", "/etc/resolv.conf"]),
            "nameserver 10.53.0.10\nnameserver 10.53.0.11\nsearch svc.edge.test edge.test\noptions ndots:2\n",
          );
          const ro = await execText(rt, app.id, [
            "sh",
            "-c",
            "echo x >> /etc/resolv.conf 2>&1; echo rc=$?",
          ]);
          assert.match(ro, /rc=[1-9]/, "read-only, as the kubelet mounts it");
        });

        await t.step(`${engine}: restart policies`, async () => {
          const never = uid();
          const onFailure = uid();
          const always = uid();
          await pm.ensure(pod(never, image, {
            restartPolicy: RestartPolicy.NEVER,
            containers: [{ name: "app", image, command: ["sh", "-c", "exit 3"] }],
          }));
          await pm.ensure(pod(onFailure, image, {
            restartPolicy: RestartPolicy.ON_FAILURE,
            containers: [{ name: "app", image, command: ["sh", "-c", "exit 1"] }],
          }));
          await pm.ensure(pod(always, image, {
            containers: [{ name: "app", image, command: ["sh", "-c", "exit 0"] }],
          }));
          await eventually("Never: Failed with exit code 3", async () => {
            const s = await pm.status(never);
            return s.phase === PodStatusMsg_Phase.FAILED && s.containers[0]?.exitCode === 3
              ? true
              : undefined;
          }, 30_000);
          for (const u of [onFailure, always]) {
            await eventually("a restart", async () => {
              const s = await pm.status(u);
              return (s.containers[0]?.restartCount ?? 0) >= 1 ? true : undefined;
            }, 30_000);
          }
          assert.equal((await pm.status(never)).containers[0]?.restartCount, 0);
        });

        await t.step(`${engine}: wrong registry credentials give ErrImagePull`, async () => {
          const u = uid();
          const ref = `${registryImage(services.endpoints.registry)}:${TEST_IMAGE_TAG}`;
          await rt.removeImage(ref).catch(() => {});
          await pm.ensure(pod(u, image, {
            containers: [{ name: "app", image: ref, command: ["sleep", "3600"] }],
            imagePull: {
              [ref]: {
                auth: [{
                  server: services.endpoints.registry,
                  username: "aranya",
                  password: "wrong",
                }],
              },
            },
          }));
          const s = await pm.status(u);
          // The failed pull, or already the back-off after it (the supervision loop may have
          // passed again before the status is read).
          assert.ok(
            ["ErrImagePull", "ImagePullBackOff"].includes(s.containers[0]?.reason ?? ""),
            s.containers[0]?.reason,
          );
          assert.match(s.containers[0]?.message ?? "", /aranya-e2e\/busybox/);
        });

        await t.step(`${engine}: an agent restart adopts pods without duplicates`, async () => {
          const u = uids[0]!;
          const before = await rt.listContainers({ [LABEL_POD_UID]: u });
          const again = new PodManager({ runtime: rt, stateDir, infraImage: image });
          const cmd = pod(u, image); // same uid and spec hash "v1" as the first pod
          again.adopt([cmd]);
          await again.ensure(cmd);
          const after = await rt.listContainers({ [LABEL_POD_UID]: u });
          assert.equal(after.length, before.length);
        });

        await t.step(`${engine}: delete removes every container`, async () => {
          // The reply tells how the stopped containers ended (the deleted pod's terminal status).
          const ended = await pm.delete(uids[0]!, 1);
          const app = ended.containers?.find((c) => c.name === "app");
          assert.equal(app?.state, ContainerStatus_State.TERMINATED, JSON.stringify(app));
          assert.notEqual(app?.exitCode, 0, "killed: sh ignores SIGTERM as PID 1");
          for (const u of uids.slice(1)) await pm.delete(u, 1);
          for (const u of uids) {
            assert.deepEqual(await rt.listContainers({ [LABEL_POD_UID]: u }), []);
          }
          assert.ok(statuses.some((s) => s.phase === PodStatusMsg_Phase.DELETED));
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
    await services.release();
  }
});

Deno.test("the supervision loop leaves no abort listener behind per pass", async () => {
  // No pods, so no engine call: the loop only waits between passes.
  const pm = new PodManager({
    runtime: new DockerRuntime({ socket: `${CACHE}/no-engine-${crypto.randomUUID()}.sock` }),
    stateDir: `${CACHE}/test-pods/${crypto.randomUUID()}`,
    infraImage: "unused",
    syncIntervalMs: 5,
  });
  const ac = new AbortController();
  let live = 0;
  const add = ac.signal.addEventListener.bind(ac.signal);
  const remove = ac.signal.removeEventListener.bind(ac.signal);
  ac.signal.addEventListener = ((...a: Parameters<typeof add>) => {
    if (a[0] === "abort") live++;
    add(...a);
  }) as typeof add;
  ac.signal.removeEventListener = ((...a: Parameters<typeof remove>) => {
    if (a[0] === "abort") live--;
    remove(...a);
  }) as typeof remove;
  const running = pm.run(ac.signal);
  await new Promise((r) => setTimeout(r, 300)); // dozens of passes
  const during = live;
  ac.abort();
  await running;
  assert.ok(during <= 2, `${during} abort listeners on the run signal after 300 ms of passes`);
});
