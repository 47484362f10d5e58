/**
 * `deno task deploy` to an aarch64 device, end to end: the real task against the local control
 * plane and the real aranya, over SSH to an aarch64 host made on this x86_64 machine
 * (arm64_device_host.ts: the test's sshd runs every command in Debian's arm64 busybox under qemu,
 * so `uname -m` says aarch64, and a binfmt_misc handler runs arm64 executables with qemu).
 *
 * No compiled arhat exists (deno compile needs denort, which cannot be downloaded here), so the
 * deployer ships the launcher, whose `deno` must now be the arm64 build of this Deno's version
 * (ops/build/deno_for_arch.ts): the probe sees aarch64, the launcher with the arm64 deno is
 * copied, the launcher script starts it (the kernel hands it to qemu), its Node is Ready and says
 * arm64, the sample workload runs on it through the host's Podman, and a re-run changes nothing.
 *
 * The device paths are the real ones (/usr/local/bin/arhat, /usr/local/lib/arhat, /etc/arhat,
 * /var/lib/arhat, /var/log/arhat.log), as in deploy_e2e_test.ts: the test refuses to run where an
 * arhat it did not install is there, and removes all of it afterwards, and the binfmt handler.
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import {
  type Aarch64Binfmt,
  ensureArm64Busybox,
  forceArm64Shell,
  useAarch64Binfmt,
} from "./arm64_device_host.ts";
import { ensureArm64Deno, hasQemuAarch64 } from "./arm64_setup.ts";
import { World } from "./edge_world.ts";
import { useCluster, useServices } from "./fixtures.ts";
import { ARM64_PACKAGES, ensureHostPackages } from "./host_setup.ts";
import { freePort } from "./process.ts";
import { sampleWorkload } from "./samples.ts";
import { type SshServer, startSshd } from "./services/sshd.ts";
import { elfArch } from "@aranya/ops/build/deno_for_arch";
import { runDeployTask } from "@aranya/ops/deploy/testing/deploy_cli";

const MARKER = "/etc/arhat/.aranya-e2e";
const DEVICE_FILES = [
  "/usr/local/bin/arhat",
  "/usr/local/lib/arhat",
  "/etc/arhat",
  "/var/lib/arhat",
  "/var/log/arhat.log",
];

async function sh(script: string): Promise<string> {
  const r = await new Deno.Command("sh", { args: ["-c", script], stdout: "piped", stderr: "piped" })
    .output();
  return new TextDecoder().decode(r.stdout).trim();
}

/** Why this test cannot run here, if it cannot. */
async function skipReason(): Promise<string | undefined> {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    return `emulates an aarch64 host on x86_64 Linux; this is ${Deno.build.os}/${Deno.build.arch}`;
  }
  if (Deno.uid() !== 0) {
    return "needs root: it installs arhat on this machine through its sshd and registers a " +
      "binfmt_misc handler";
  }
  // Deno reads nothing under /proc without --allow-all; grep may.
  if (!(await sh("grep -qw binfmt_misc /proc/filesystems && echo yes")).includes("yes")) {
    return "this kernel has no binfmt_misc, so arm64 programs cannot be started as programs";
  }
  if (!(await hasQemuAarch64()) && (await sh("command -v apt-get")) === "") {
    return "qemu-user-static is not installed and apt-get is missing";
  }
  try {
    Deno.statSync("/etc/arhat");
  } catch {
    return undefined;
  }
  try {
    Deno.statSync(MARKER);
    return undefined;
  } catch {
    return "/etc/arhat exists and was not made by this test: refusing to overwrite a real arhat";
  }
}

const reason = await skipReason();
if (reason) console.warn(`arm64 deploy e2e test skipped: ${reason}`);

const say = (line: string) => console.log(`[arm64-deploy] ${line}`);

/** Stops the arhat the deployer started (its pid file) and removes everything it installed. */
async function removeDeployedArhat(): Promise<void> {
  await sh(
    'pid=$(cat /var/lib/arhat/arhat.pid 2>/dev/null) && [ -n "$pid" ] && kill -TERM "$pid" && ' +
      'for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; ' +
      'kill -KILL "$pid" 2>/dev/null; true',
  );
  await sh(`rm -rf ${DEVICE_FILES.join(" ")}`);
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

Deno.test({
  name: "arm64 deploy: the launcher with the arm64 deno over SSH to an aarch64 host (qemu) " +
    "ends in a Ready arm64 Node running a workload; a re-run changes nothing",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    await ensureHostPackages(say, ARM64_PACKAGES);
    await ensureArm64Deno(say);
    const busybox = await ensureArm64Busybox(say);
    const cluster = await useCluster();
    const services = await useServices();
    const w = new World(cluster, services, "podman");
    let binfmt: Aarch64Binfmt | undefined;
    let sshd: SshServer | undefined;
    const timings: Record<string, number> = {};
    try {
      binfmt = await useAarch64Binfmt();
      say(`binfmt_misc handler "${binfmt.name}" runs aarch64 programs (ours: ${binfmt.ours})`);
      assert.equal(await sh(`"${busybox}" uname -m`), "aarch64", "an arm64 program runs");
      sshd = await startSshd();
      await forceArm64Shell(sshd, busybox);
      await w.init();
      await removeDeployedArhat();
      await sh(
        `mkdir -p /etc/arhat && echo "installed by e2e/arm64_deploy_e2e_test.ts" >${MARKER}`,
      );
      const device = `${w.ns}-arm64`;
      const at = (rest: string) => new RegExp(`\\[${w.ns}/${device}\\] ${rest}`);

      const linkPort = freePort();
      const httpPort = freePort();
      const aranya = await w.startAranya(aranyaConfigYaml({
        kubeconfig: w.kubeconfig,
        namespaces: [w.ns],
        httpPort,
        websocket: { port: linkPort, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
        kubelet: { port: freePort(), portCount: 1 },
      }));
      await waitAranyaReady(aranya, httpPort);

      const inventory = `${w.dir}/inventory.yaml`;
      await Deno.writeTextFile(
        inventory,
        `cluster: { kubeconfig: ${cluster.kubeconfig} }
aranya:
  tls: { certFile: tls.crt, keyFile: tls.key }
links:
  websocket: { url: "wss://localhost:${linkPort}/v1/link", caFile: ${w.arhatDir}/ca.crt }
artifacts: { dir: empty-dist, launcher: true }
timeouts: { credentials: 60s, nodeReady: 300s }
defaults:
  namespace: ${w.ns}
  user: root
  key: ${sshd.clientKeyFile}
  knownHosts: ${sshd.knownHostsFile}
  arch: aarch64
  runtime: { endpoint: ${services.endpoints.podmanSocket}, infraImage: ${services.endpoints.testImage} }
devices:
  - name: ${device}
    address: 127.0.0.1:${sshd.port}
`,
      );
      await Deno.mkdir(`${w.dir}/empty-dist`, { recursive: true });
      const step = async (name: string, fn: () => Promise<void>) => {
        if (!await t.step(name, fn)) throw new Error(`Step "${name}" failed`);
      };

      let pid = "";
      await step(
        "deploy: the aarch64 host gets the arm64 launcher; its Node is Ready, arm64",
        async () => {
          const t0 = performance.now();
          const r = await runDeployTask(["-i", inventory]);
          timings.deploy_s = seconds(performance.now() - t0);
          assert.equal(r.code, 0, r.out);
          assert.match(r.out, at(String.raw`connected: aarch64, no systemd`));
          assert.match(r.out, at(String.raw`files: copied .* s, launcher\)`));
          assert.match(r.out, at(String.raw`arhat: started \(none\)`));
          assert.match(r.out, at(String.raw`Node "${device}" Ready`));
          say(`deploy to Ready took ${timings.deploy_s} s (bundle, copy, start, Ready)`);
          // What the device got: the arm64 deno, run by qemu through binfmt_misc.
          const f = await Deno.open("/usr/local/lib/arhat/deno");
          const head = new Uint8Array(20);
          await f.read(head);
          f.close();
          assert.equal(elfArch(head), "aarch64");
          pid = (await Deno.readTextFile("/var/lib/arhat/arhat.pid")).trim();
          const cmdline = await sh(`tr '\\0' ' ' </proc/${pid}/cmdline`);
          // binfmt_misc starts the emulator (by its "aarch64-binfmt-P" name, or another handler's)
          // with the arm64 deno and the launcher's arguments.
          assert.match(cmdline, /qemu.*\/usr\/local\/lib\/arhat\/deno run .*-P=arhat/);
          const node = JSON.parse(await cluster.kubectlOk(["get", "node", device, "-o", "json"]));
          assert.equal(node.status.nodeInfo.architecture, "arm64");
          assert.equal(node.metadata.labels["kubernetes.io/arch"], "arm64");
        },
      );

      await step("the sample workload runs on the arm64 device", async () => {
        const t1 = performance.now();
        await w.kubectl(
          ["apply", "-f", "-"],
          await sampleWorkload(device, services.endpoints.testImage),
        );
        const pod = await w.runningPod("app=edge-demo", 300_000);
        timings.pod_running_s = seconds(performance.now() - t1);
        assert.equal(pod.spec.nodeName, device);
        const [ctr] = await w.appContainers(pod.metadata.uid);
        assert.equal(ctr?.State, "running");
      });

      await step("a re-run changes nothing", async () => {
        const t2 = performance.now();
        const r = await runDeployTask(["-i", inventory]);
        timings.rerun_s = seconds(performance.now() - t2);
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, at(String.raw`files: all \d+ up to date \(launcher\)`));
        assert.match(r.out, at(String.raw`arhat: running, unchanged`));
        assert.equal((await Deno.readTextFile("/var/lib/arhat/arhat.pid")).trim(), pid);
      });
      say(`arm64 deploy timings: ${JSON.stringify(timings)}`);
    } catch (err) {
      console.error(await w.tails());
      console.error(await sh("tail -n 40 /var/log/arhat.log 2>/dev/null"));
      throw err;
    } finally {
      // The namespace goes while aranya and the deployed arhat still run (they finish its pods).
      await w.close();
      await removeDeployedArhat();
      await sshd?.stop();
      await binfmt?.release();
      await services.release();
      await cluster.release();
    }
  },
});
