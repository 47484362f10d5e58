/**
 * The worker node (e2e/cluster/worker_node.ts) is a real node of the control
 * plane: the kubelet built from the pinned module with Debian's containerd
 * turns Ready; a pod tolerating its taint runs the test image with an address
 * of the worker's bridge; `kubectl exec`, `logs` and `port-forward` (WebSocket
 * and SPDY) go API server -> kubelet -> containerd; the host's kernel tunables
 * stay as they are. Stopping it leaves no process (kubelet, containerd, shims,
 * containers), no namespace and so no mount, no veth, bridge, cgroup, Node or
 * folder; a start that fails leaves nothing either.
 */
import assert from "node:assert/strict";
import { sha256Hex } from "@aranya/common/digest";
import { eventually, uniqueName, useCluster } from "../fixtures.ts";
import { CACHE, ensureDir, exists, removeAll } from "../paths.ts";
import { freePort, run, sleep } from "../process.ts";
import { TEST_IMAGE } from "../services/test_image.ts";
import { binPath, pinnedVersion } from "./build.ts";
import {
  localClusterCa,
  mountsUnder,
  type Proc,
  processes,
  startWorkerNode,
  stopDeadWorkers,
  WORKER_ID_LABEL,
  WORKER_LABEL,
  WORKER_PEER,
  WORKER_TAINT,
  WORKER_TOLERATION,
  workerDir,
  type WorkerNode,
  workerProcesses,
  workerSelector,
  workerSkipReason,
} from "./worker_node.ts";

const reason = await workerSkipReason();
if (reason) console.warn(`worker node tests skipped: ${reason}`);

const say = (line: string) => console.log(`[worker] ${line}`);

/** The kernel tunables the kubelet would rewrite, as the host has them. */
async function hostTunables(): Promise<string> {
  return await run("cat", [
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/vm/panic_on_oom",
    "/proc/sys/kernel/panic",
    "/proc/sys/kernel/panic_on_oops",
  ]);
}

/** Where a kubelet or containerd of the host would write; a worker writes none of them. */
const HOST_PATHS = [
  "/var/lib/kubelet",
  "/var/log/containers",
  "/var/log/pods",
  "/var/lib/containerd",
  "/run/containerd",
  "/opt/containerd",
];

/** What is at each of {@link HOST_PATHS} (absent, or the names in it). */
async function hostPaths(): Promise<string> {
  const out: Record<string, string[] | null> = {};
  for (const p of HOST_PATHS) {
    out[p] = await Array.fromAsync(Deno.readDir(p)).then((es) => es.map((e) => e.name).sort())
      .catch(() => null);
  }
  return JSON.stringify(out);
}

/** `pid` and every process below it. */
function descendants(all: Proc[], pid: number): Proc[] {
  const out: Proc[] = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift()!;
    for (const c of all.filter((x) => x.ppid === p)) {
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}

/** Names of the interfaces enslaved to `bridge`. */
async function bridgePorts(bridge: string): Promise<string[]> {
  const out = await run("ip", ["-o", "link", "show", "master", bridge]);
  return [...out.matchAll(/^\d+: ([^:@]+)/gm)].map((m) => m[1]!);
}

async function linkExists(name: string): Promise<boolean> {
  return (await new Deno.Command("ip", {
    args: ["link", "show", "dev", name],
    stdout: "null",
    stderr: "null",
  }).output()).success;
}

/** Ids of the containers (sandboxes included) whose bundles are in worker folder `dir`. */
async function containerIds(dir: string): Promise<string[]> {
  const bundles = `${dir}/containerd/state/io.containerd.runtime.v2.task/k8s.io`;
  return (await Array.fromAsync(Deno.readDir(bundles))).map((e) => e.name);
}

/** The cgroups of containers `ids` that exist in any hierarchy, one a line. */
async function cgroupsOf(ids: string[]): Promise<string> {
  // Deno wants --allow-all for /sys; ls looks in every hierarchy.
  return await run("sh", [
    "-c",
    'for id in "$@"; do ls -d /sys/fs/cgroup/*/k8s.io/$id /sys/fs/cgroup/k8s.io/$id 2>/dev/null; done; true',
    "sh",
    ...ids,
  ]);
}

/** Sends `payload` through 127.0.0.1:`port` to an echo server and returns what came back. */
async function echo(port: number, payload: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const writing = (async () => {
      for (let off = 0; off < payload.length; off += 16384) {
        const chunk = payload.subarray(off, off + 16384);
        let n = 0;
        while (n < chunk.length) n += await conn.write(chunk.subarray(n));
      }
    })();
    const got = new Uint8Array(payload.length);
    let have = 0;
    const buf = new Uint8Array(65536);
    const deadline = Date.now() + 30_000;
    while (have < payload.length && Date.now() < deadline) {
      const n = await conn.read(buf);
      if (n === null) break;
      got.set(buf.subarray(0, Math.min(n, payload.length - have)), have);
      have += n;
    }
    await writing;
    assert.equal(have, payload.length, `echoed ${have} of ${payload.length} bytes`);
    return got;
  } finally {
    conn.close();
  }
}

Deno.test({
  name: "worker node: the pinned kubelet with Debian containerd and a CNI bridge is a Ready " +
    "node; a pod on it runs, exec, logs and port-forward work; stop leaves nothing behind",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const ns = uniqueName("worker-e2e");
    let worker: WorkerNode | undefined;
    try {
      const ca = await localClusterCa(cluster.kubeconfig);
      assert.ok(ca, `the cluster CA beside "${cluster.kubeconfig}"`);
      const tunables = await hostTunables();
      const pathsBefore = await hostPaths();
      worker = await startWorkerNode({ kubeconfig: cluster.kubeconfig, ca, log: say });
      const w = worker;
      say(`Node "${w.nodeName}" Ready after ${w.readySeconds.toFixed(1)} s`);

      await t.step(
        "the Node is Ready with containerd, the pinned kubelet, taint and labels",
        async () => {
          const node = JSON.parse(
            await cluster.kubectlOk(["get", "node", w.nodeName, "-o", "json"]),
          );
          const ready = node.status.conditions.find((c: { type: string }) => c.type === "Ready");
          assert.equal(ready?.status, "True", JSON.stringify(node.status.conditions));
          assert.match(node.status.nodeInfo.containerRuntimeVersion, /^containerd:\/\/1\./);
          assert.equal(node.status.nodeInfo.kubeletVersion, await pinnedVersion());
          assert.deepEqual(node.spec.taints, [WORKER_TAINT]);
          assert.equal(node.metadata.labels[WORKER_LABEL], WORKER_PEER);
          assert.equal(node.metadata.labels[WORKER_ID_LABEL], w.id);
          assert.deepEqual(
            node.status.addresses.find((a: { type: string }) => a.type === "InternalIP"),
            { type: "InternalIP", address: w.nodeIp },
          );
          assert.equal(node.status.daemonEndpoints.kubeletEndpoint.Port, w.kubeletPort);
        },
      );

      await t.step("the host's kernel tunables are untouched", async () => {
        assert.equal(await hostTunables(), tunables);
      });

      await cluster.kubectlOk(["create", "namespace", ns]);
      await eventually(
        `the default ServiceAccount of "${ns}"`,
        async () =>
          (await cluster.kubectl(["-n", ns, "get", "sa", "default"])).code === 0 || undefined,
      );

      await t.step(
        "a pod tolerating the taint runs the test image with an IP of the bridge",
        async () => {
          await cluster.kubectlOk(
            ["create", "-f", "-"],
            JSON.stringify({
              apiVersion: "v1",
              kind: "Pod",
              metadata: { name: "echo", namespace: ns },
              spec: {
                nodeSelector: workerSelector(w.id),
                tolerations: [WORKER_TOLERATION],
                terminationGracePeriodSeconds: 1,
                containers: [{
                  name: "echo",
                  image: TEST_IMAGE,
                  imagePullPolicy: "IfNotPresent",
                  // A TCP echo server: a cat per connection, kept listening (-ll).
                  command: ["sh", "-c", "echo worker-pod-started; exec nc -ll -p 8080 -e cat"],
                  ports: [{ containerPort: 8080 }],
                }],
              },
            }),
          );
          const pod = await eventually("the pod to run", async () => {
            const p = JSON.parse(
              await cluster.kubectlOk(["-n", ns, "get", "pod", "echo", "-o", "json"]),
            );
            return p.status.phase === "Running" && p.status.podIP ? p : undefined;
          }, 90_000);
          assert.equal(pod.spec.nodeName, w.nodeName);
          const prefix = w.podSubnet.replace(/\.0\/24$/, ".");
          assert.ok(pod.status.podIP.startsWith(prefix), `${pod.status.podIP} in ${w.podSubnet}`);
          assert.notEqual(pod.status.podIP, w.nodeIp);
        },
      );

      await t.step("kubectl exec echo hi returns hi", async () => {
        const out = await cluster.kubectlOk(["-n", ns, "exec", "echo", "--", "echo", "hi"]);
        assert.equal(out, "hi\n");
      });

      await t.step("kubectl logs shows the container's output", async () => {
        const out = await cluster.kubectlOk(["-n", ns, "logs", "echo"]);
        assert.equal(out, "worker-pod-started\n");
      });

      await t.step(
        "kubectl port-forward carries bytes both ways (WebSocket and SPDY)",
        async () => {
          for (const websockets of ["true", "false"]) {
            const local = freePort();
            const pf = new Deno.Command(binPath("kubectl"), {
              args: [
                `--kubeconfig=${cluster.kubeconfig}`,
                "-n",
                ns,
                "port-forward",
                "pod/echo",
                `${local}:8080`,
              ],
              env: { KUBECTL_PORT_FORWARD_WEBSOCKETS: websockets },
              stdin: "null",
              stdout: "piped",
              stderr: "piped",
            }).spawn();
            let out = "";
            const pump = (async () => {
              for await (const c of pf.stdout) out += new TextDecoder().decode(c);
            })();
            const errs = new Response(pf.stderr).text();
            try {
              await eventually(
                "port-forward listening",
                () => Promise.resolve(out.includes("Forwarding from") || undefined),
                30_000,
              );
              for (let i = 0; i < 2; i++) {
                const payload = crypto.getRandomValues(new Uint8Array(65536)).slice();
                const back = new Uint8Array(payload.length * 4);
                for (let k = 0; k < 4; k++) back.set(payload, k * payload.length);
                const got = await echo(local, back);
                assert.equal(
                  sha256Hex(got),
                  sha256Hex(back),
                  `websockets=${websockets}: byte-identical`,
                );
              }
            } finally {
              try {
                pf.kill("SIGTERM");
              } catch { /* exited */ }
              await pf.status;
              await pump;
              await errs;
            }
          }
        },
      );

      await t.step(
        "stop leaves no process, namespace, mount, veth, bridge, cgroup, Node or folder",
        async () => {
          const all = await processes();
          const ours = await workerProcesses(w.id);
          const tree = [...ours, ...descendants(all, w.pids.containerd)];
          const kinds = tree.map((p) => p.args.split(" ")[0]!.replace(/^.*\//, ""));
          for (const k of ["kubelet", "containerd", "containerd-shim-runc-v2", "sleep", "nc"]) {
            assert.ok(kinds.includes(k), `a running "${k}" among ${JSON.stringify(kinds)}`);
          }
          const nsMounts = await run("cat", [`/proc/${w.pids.containerd}/mountinfo`]);
          assert.match(
            nsMounts,
            new RegExp(`${w.dir}/kubelet/pods/`),
            "pod volumes in the namespace",
          );
          assert.deepEqual(
            await mountsUnder(w.dir),
            [],
            "no mount of the worker in the host's table",
          );
          const veths = await bridgePorts(w.bridge);
          assert.ok(veths.length >= 1, "the pod's veth is on the bridge");
          const cgroups = await containerIds(w.dir);
          assert.ok(cgroups.length >= 2, "sandbox and container bundles");

          await w.stop();

          const after = await processes();
          for (const p of tree) {
            const now = after.find((x) => x.pid === p.pid);
            assert.ok(now?.args !== p.args, `process ${p.pid} "${p.args.slice(0, 80)}" is gone`);
          }
          assert.deepEqual(await workerProcesses(w.id), []);
          assert.notEqual(
            (await new Deno.Command("cat", {
              args: [`/proc/${w.pids.containerd}/mountinfo`],
              stdout: "null",
              stderr: "null",
            }).output()).code,
            0,
            "the namespace's init is gone, and with it the namespace",
          );
          assert.deepEqual(await mountsUnder(w.dir), []);
          assert.equal(await linkExists(w.bridge), false, `bridge "${w.bridge}" deleted`);
          await eventually("the pod's veths to go", async () => {
            for (const v of veths) if (await linkExists(v)) return undefined;
            return true;
          }, 15_000);
          assert.equal(await cgroupsOf(cgroups), "", "the containers' cgroups removed");
          const node = await cluster.kubectl(["get", "node", w.nodeName]);
          assert.notEqual(node.code, 0);
          assert.match(node.stderr, /NotFound|not found/);
          assert.equal(await exists(w.dir), false, `"${w.dir}" removed`);
          assert.equal(await exists(`${w.dir}.owner`), false);
          assert.equal(await hostPaths(), pathsBefore, "the host's kubelet and containerd paths");
          assert.equal(await hostTunables(), tunables);
        },
      );
    } finally {
      await cluster.kubectl(["delete", "namespace", ns, "--wait=false", "--ignore-not-found"]);
      await worker?.stop();
      await cluster.release();
    }
  },
});

Deno.test({
  name: "worker node: a start that fails (the kubelet refuses its flags) leaves nothing behind",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const id = `f${crypto.randomUUID().replaceAll("-", "").slice(0, 7)}`;
    try {
      const ca = await localClusterCa(cluster.kubeconfig);
      assert.ok(ca);
      await assert.rejects(
        startWorkerNode({
          id,
          kubeconfig: cluster.kubeconfig,
          ca,
          kubeletFlags: ["--no-such-flag"],
          log: say,
        }),
        (err: Error) => {
          assert.match(err.message, /Service "kubelet" exited before it was ready/);
          assert.match(err.message, /no-such-flag/);
          return true;
        },
      );
      await sleep(0);
      assert.deepEqual(await workerProcesses(id), []);
      assert.equal(await exists(workerDir(id)), false);
      assert.equal(await exists(`${workerDir(id)}.owner`), false);
      assert.equal(await linkExists(`arw-${id}`), false);
      assert.notEqual((await cluster.kubectl(["get", "node", `worker-${id}`])).code, 0);
    } finally {
      await cluster.release();
    }
  },
});

Deno.test({
  name: "worker node: dies with a harness that is SIGKILLed (kubelet, containerd, shims, " +
    "containers); what is left (bridge, cgroups, Node, folder) goes at the next sweep",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const cluster = await useCluster();
    const ns = uniqueName("worker-kill");
    const scratch = await ensureDir(`${CACHE}/test-process/${crypto.randomUUID()}`);
    try {
      const ca = await localClusterCa(cluster.kubeconfig);
      assert.ok(ca);
      const script = `${scratch}/harness.ts`;
      await Deno.writeTextFile(
        script,
        `import { startWorkerNode } from "${new URL("./worker_node.ts", import.meta.url).href}";
const w = await startWorkerNode({ kubeconfig: ${JSON.stringify(cluster.kubeconfig)},
  ca: ${JSON.stringify(ca)} });
console.log(JSON.stringify({ id: w.id, dir: w.dir, bridge: w.bridge, nodeName: w.nodeName,
  containerd: w.pids.containerd }));
await new Promise(() => {});
`,
      );
      const harness = new Deno.Command("deno", {
        args: ["run", "-P=e2e", "--no-prompt", script],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = harness.stdout.getReader();
      let line = "";
      while (!line.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        line += new TextDecoder().decode(value);
      }
      const w = JSON.parse(line) as {
        id: string;
        dir: string;
        bridge: string;
        nodeName: string;
        containerd: number;
      };
      await cluster.kubectlOk(["create", "namespace", ns]);
      await eventually(
        `the default ServiceAccount of "${ns}"`,
        async () =>
          (await cluster.kubectl(["-n", ns, "get", "sa", "default"])).code === 0 || undefined,
      );
      await cluster.kubectlOk(
        ["create", "-f", "-"],
        JSON.stringify({
          apiVersion: "v1",
          kind: "Pod",
          metadata: { name: "idle", namespace: ns },
          spec: {
            nodeSelector: workerSelector(w.id),
            tolerations: [WORKER_TOLERATION],
            terminationGracePeriodSeconds: 1,
            containers: [{ name: "idle", image: TEST_IMAGE, command: ["sleep", "3600"] }],
          },
        }),
      );
      await eventually("the pod to run", async () => {
        const phase = await cluster.kubectlOk([
          "-n",
          ns,
          "get",
          "pod",
          "idle",
          "-o",
          "jsonpath={.status.phase}",
        ]);
        return phase === "Running" || undefined;
      }, 90_000);
      const tree = [
        ...await workerProcesses(w.id),
        ...descendants(await processes(), w.containerd),
      ];
      assert.ok(tree.some((p) => p.args === "sleep 3600"), "the container's process runs");
      const veths = await bridgePorts(w.bridge);
      assert.ok(veths.length >= 1);
      const ids = await containerIds(w.dir);
      assert.notEqual(await cgroupsOf(ids), "", "the containers' cgroups exist");

      harness.kill("SIGKILL");
      await harness.status;
      reader.releaseLock();
      await harness.stdout.cancel();

      await eventually("every process of the worker to die with its harness", async () => {
        const now = await processes();
        return tree.every((p) => now.find((x) => x.pid === p.pid)?.args !== p.args) || undefined;
      }, 10_000);
      await eventually("the pod's veths to go with its network namespace", async () => {
        for (const v of veths) if (await linkExists(v)) return undefined;
        return true;
      }, 15_000);
      assert.deepEqual(await mountsUnder(w.dir), []);
      assert.equal(await exists(w.dir), true, "the folder stays until the sweep");

      await stopDeadWorkers();
      assert.equal(await exists(w.dir), false, `"${w.dir}" removed by the sweep`);
      assert.equal(await linkExists(w.bridge), false, `bridge "${w.bridge}" deleted by the sweep`);
      assert.equal(await cgroupsOf(ids), "", "the containers' cgroups removed by the sweep");
      assert.notEqual((await cluster.kubectl(["get", "node", w.nodeName])).code, 0);
    } finally {
      await cluster.kubectl(["delete", "namespace", ns, "--wait=false", "--ignore-not-found"]);
      await stopDeadWorkers();
      await removeAll(scratch);
      await cluster.release();
    }
  },
});
