/**
 * arm64 for real, on an x86_64 machine: Deno's arm64 build (`@deno/linux-arm64-glibc` from the npm
 * registry, at this Deno's version) runs arhat as shipped (ops/build/bundle.ts: the bundle, its
 * permission set and V8 flags, run the way the launcher runs them; bench/shipped_arhat.ts) under
 * qemu user emulation (`qemu-aarch64-static`), as a device of the real aranya on the local control
 * plane.
 *
 * Checked: the Node says arm64 (`status.nodeInfo.architecture`, the `kubernetes.io/arch` label and
 * its beta alias; the EdgeDevice's agent arch "arm64/v8"); the arhat process is the emulator; a
 * pod that selects `kubernetes.io/arch: arm64` is scheduled there and runs (the amd64 test image,
 * through the host's Podman socket: the engine is the host's, only the agent is emulated);
 * `kubectl logs` and `kubectl exec` reach it; deleting it removes its containers.
 *
 * Emulated V8 is slow, so the waits are long (minutes); how long the device took to be Ready and
 * the pod to be Running is logged (`arm64 timings: {...}`), not asserted. The second test checks
 * what the deployer ships to an aarch64 device when no compiled arhat exists (the launcher with
 * the arm64 deno) and runs those very files under qemu; an SSH deploy to an aarch64 host is not
 * possible here (see docs/arhat.md, "arm64").
 *
 * Prerequisites (Debian's qemu-user-static, libc6:arm64, libgcc-s1:arm64, the arm64 deno) come
 * from `deno task setup`; run on its own, the test installs them itself (root needed for apt).
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { ensureArm64Deno, hasQemuAarch64 } from "./arm64_setup.ts";
import { World } from "./edge_world.ts";
import { eventually, uniqueName, useCluster, useServices } from "./fixtures.ts";
import { ARM64_PACKAGES, ensureHostPackages } from "./host_setup.ts";
import { advertisedAddress } from "./kubelet_fixtures.ts";
import { CACHE, removeAll } from "./paths.ts";
import { freePort, run } from "./process.ts";
import { buildShippedArhat } from "@aranya/bench/shipped_arhat";
import {
  type ShippedDevice,
  shippedDeviceReady,
  startShippedDevice,
} from "@aranya/bench/shipped_device";
import { elfArch } from "@aranya/ops/build/deno_for_arch";
import { LAUNCHER_REMOTE } from "@aranya/ops/build/launcher";
import { V8_FLAGS } from "@aranya/ops/build/bundle";
import { ArtifactStore } from "@aranya/ops/deploy/artifacts";

/** How long the emulated device may take to be Ready, and its pod to run. */
const READY_TIMEOUT_MS = 6 * 60_000;
const POD_TIMEOUT_MS = 5 * 60_000;

/** Why these tests cannot run here, if they cannot. */
async function skipReason(): Promise<string | undefined> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `emulates arm64 on x86_64 Linux; this is ${Deno.build.os}/${Deno.build.arch}`;
  }
  if (Deno.uid() !== 0 && !(await hasQemuAarch64())) {
    return 'qemu-user-static is not installed and installing it needs root: run "deno task setup"';
  }
  return undefined;
}

const reason = await skipReason();
if (reason) console.warn(`arm64 e2e tests skipped: ${reason}`);

const say = (line: string) => console.log(`[arm64] ${line}`);

/** The packages and the arm64 deno (idempotent; installs only what is missing). */
async function arm64Deno() {
  await ensureHostPackages(say, ARM64_PACKAGES);
  return await ensureArm64Deno(say);
}

/** A pod that may only run on an arm64 node, on `node`, printing a line and idling. */
function arm64Pod(name: string, node: string, image: string): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels: { app: name } },
    spec: {
      nodeSelector: { "kubernetes.io/arch": "arm64", "arhat.dev/name": node },
      tolerations: [{ key: "arhat.dev/namespace", operator: "Exists", effect: "NoSchedule" }],
      terminationGracePeriodSeconds: 1,
      containers: [{
        name: "app",
        image,
        imagePullPolicy: "IfNotPresent",
        command: [
          "sh",
          "-c",
          "echo \"arm64-e2e pod up, machine $(uname -m)\"; trap 'exit 0' TERM; " +
          "while :; do sleep 1; done",
        ],
      }],
    },
  });
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

Deno.test({
  name: "arm64: shipped arhat on the arm64 deno under qemu is an arm64 Node of the real aranya; " +
    "a pod runs on it through the host's Podman, logs and exec work",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const arm = await arm64Deno();
    const cluster = await useCluster();
    const services = await useServices();
    const w = new World(cluster, services, "podman");
    const bundleDir = `${CACHE}/arm64-e2e/bundle-${crypto.randomUUID().slice(0, 8)}`;
    let device: ShippedDevice | undefined;
    const timings: Record<string, number> = { deno_eval_s: seconds(arm.evalSeconds * 1000) };
    try {
      await w.init();
      const websocketPort = freePort();
      const httpPort = freePort();
      const aranya = await w.startAranya(aranyaConfigYaml({
        kubeconfig: w.kubeconfig,
        namespaces: [w.ns],
        httpPort,
        websocket: {
          port: websocketPort,
          certFile: `${w.dir}/tls.crt`,
          keyFile: `${w.dir}/tls.key`,
        },
        kubelet: { address: advertisedAddress(), port: freePort(), portCount: 1 },
      }));
      await waitAranyaReady(aranya, httpPort);

      const bundle = await buildShippedArhat(bundleDir, { deno: [arm.qemu, arm.deno] });
      assert.deepEqual(bundle.v8Flags, V8_FLAGS.arhat, "the shipped V8 flags");
      const name = uniqueName("arm64");
      const t0 = performance.now();
      // First start after install: an empty DENO_DIR, as a device's launcher has.
      device = await startShippedDevice(w, bundle, {
        transport: "websocket",
        name,
        websocketPort,
        grpcPort: freePort(),
      });
      const d = device;

      await t.step("the device's Node is Ready and says arm64", async () => {
        await shippedDeviceReady(w, d, READY_TIMEOUT_MS);
        timings.ready_s = seconds(performance.now() - t0);
        say(`device Ready ${timings.ready_s} s after the emulated arhat started`);
        const node = JSON.parse(await cluster.kubectlOk(["get", "node", name, "-o", "json"]));
        assert.equal(node.status.nodeInfo.architecture, "arm64");
        assert.equal(node.metadata.labels["kubernetes.io/arch"], "arm64");
        assert.equal(node.metadata.labels["beta.kubernetes.io/arch"], "arm64");
        assert.equal(node.metadata.labels["kubernetes.io/os"], "linux");
        const agent = await eventually("the EdgeDevice's agent info", async () => {
          const ed = await w.json(["get", "edgedevice", name]);
          return ed.status?.agent?.arch ? ed.status.agent : undefined;
        });
        assert.equal(agent.arch, "arm64/v8");
        // The process is the emulator running the arm64 deno on the shipped bundle and flags.
        const args = (await run("ps", ["-o", "args=", "-p", String(d.proc.pid)])).trim();
        assert.ok(args.startsWith(`${arm.qemu} ${arm.deno} run `), args);
        assert.match(args, / -P=arhat --v8-flags=--max-semi-space-size=1,--lite-mode .*arhat\.js /);
      });

      await t.step("a pod for arm64 nodes runs there on the host's Podman", async () => {
        const t1 = performance.now();
        await w.kubectl(
          ["apply", "-f", "-"],
          arm64Pod("arm64-app", name, services.endpoints.testImage),
        );
        const pod = await w.runningPod("app=arm64-app", POD_TIMEOUT_MS);
        timings.pod_running_s = seconds(performance.now() - t1);
        say(`pod Running (ready) ${timings.pod_running_s} s after it was created`);
        assert.equal(pod.spec.nodeName, name);
        const [ctr] = await w.appContainers(pod.metadata.uid);
        assert.equal(ctr?.State, "running");

        const logs = await eventually("the pod's first line in kubectl logs", async () => {
          const r = await cluster.kubectl(["-n", w.ns, "logs", "arm64-app"]);
          return r.code === 0 && r.stdout.includes("arm64-e2e pod up") ? r.stdout : undefined;
        }, 60_000);
        // The image is amd64 and runs on the host's engine natively: only the agent is emulated.
        assert.match(logs, /arm64-e2e pod up, machine x86_64/);

        const t2 = performance.now();
        const out = await w.kubectl(["exec", "arm64-app", "--", "sh", "-c", "echo exec-ok; id -u"]);
        timings.exec_s = seconds(performance.now() - t2);
        assert.equal(out, "exec-ok\n0\n");
        const failed = await cluster.kubectl([
          "-n",
          w.ns,
          "exec",
          "arm64-app",
          "--",
          "sh",
          "-c",
          "exit 5",
        ]);
        assert.equal(failed.code, 5, failed.stderr);
      });

      await t.step("deleting the pod removes its containers", async () => {
        const pod = await w.json(["get", "pod", "arm64-app"]);
        const t3 = performance.now();
        await w.kubectl(["delete", "pod", "arm64-app", "--wait=true", "--timeout=180s"]);
        timings.pod_deleted_s = seconds(performance.now() - t3);
        await eventually("the pod's containers gone", async () => {
          const left = await w.engine.containers({ "arhat.dev/pod-uid": pod.metadata.uid });
          return left.length === 0 ? true : undefined;
        }, 60_000);
      });
      say(`arm64 timings: ${JSON.stringify(timings)}`);
    } catch (err) {
      console.error(await w.tails());
      if (device) {
        console.error(
          `arhat's log:\n${
            (await Deno.readTextFile(device.proc.logFile).catch(() => "")).slice(-4000)
          }`,
        );
      }
      throw err;
    } finally {
      // The namespace goes while aranya and the device still run (they finish its pods).
      await w.close();
      await device?.proc.stop();
      await removeAll(bundleDir);
      await services.release();
      await cluster.release();
    }
  },
});

Deno.test({
  name:
    "arm64: the deployer's artifact for an aarch64 device is the launcher with the arm64 deno, " +
    "and those files run arhat under qemu with the shipped permission set",
  ignore: reason !== undefined,
  sanitizeResources: false,
  fn: async () => {
    const arm = await arm64Deno();
    const out = `${CACHE}/arm64-e2e/launcher-${crypto.randomUUID().slice(0, 8)}`;
    try {
      const store = new ArtifactStore({
        dir: `${out}/empty-dist`,
        launcher: true,
        launcherDir: out,
      });
      const artifact = await store.forArch("aarch64");
      assert.equal(artifact.kind, "launcher");
      const deno = artifact.files.find((f) => f.remote === LAUNCHER_REMOTE.deno);
      assert.ok(deno, "the launcher ships a deno");
      assert.equal(deno.local, `${out}-aarch64/deno`);
      const head = new Uint8Array(20);
      const f = await Deno.open(deno.local);
      await f.read(head);
      f.close();
      assert.equal(elfArch(head), "aarch64");
      const same = await store.forArch("aarch64");
      assert.equal(same, artifact, "one artifact per architecture and run");

      // The shipped files, run as the launcher script runs them: arhat starts under the shipped
      // permission set and names the invalid field of a config it may read; one it may not read
      // is refused by Deno's permissions.
      const local = (remote: string) => artifact.files.find((x) => x.remote === remote)!.local;
      const dir = `${out}-aarch64`;
      const allowed = `${dir}/.cache/arhat-e2e`; // "./.cache/arhat-e2e" beside the deno.json
      await Deno.mkdir(allowed, { recursive: true });
      await Deno.writeTextFile(`${allowed}/config.yaml`, "device: { namespace: edge }\n");
      await Deno.writeTextFile(`${dir}/config.yaml`, "device: { namespace: edge }\n");
      const runArhat = async (config: string) => {
        const o = await new Deno.Command(arm.qemu, {
          args: [
            local(LAUNCHER_REMOTE.deno),
            "run",
            "--quiet",
            "--no-prompt",
            "--no-lock",
            "--cached-only",
            "--config",
            local(LAUNCHER_REMOTE.config),
            "-P=arhat",
            `--v8-flags=${V8_FLAGS.arhat.join(",")}`,
            local(LAUNCHER_REMOTE.bundle),
            "-c",
            config,
          ],
          env: { DENO_DIR: `${dir}/deno-dir`, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
        return { code: o.code, stderr: new TextDecoder().decode(o.stderr) };
      };
      const t0 = performance.now();
      const inside = await runArhat(`${allowed}/config.yaml`);
      say(
        `the aarch64 launcher's arhat checked its config in ${seconds(performance.now() - t0)} s`,
      );
      assert.equal(inside.code, 2, inside.stderr);
      assert.match(inside.stderr, /device\.name: is required/);
      const outside = await runArhat(`${dir}/config.yaml`);
      assert.equal(outside.code, 2, outside.stderr);
      assert.match(outside.stderr, /Requires read access to \\".*\/config\.yaml\\"/);
      const script = await Deno.readTextFile(local("/usr/local/bin/arhat"));
      assert.match(script, new RegExp(`exec ${LAUNCHER_REMOTE.deno} run `));
    } finally {
      await removeAll(out);
      await removeAll(`${out}-aarch64`);
    }
  },
});
