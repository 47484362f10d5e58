/**
 * `deno task deploy` end to end: the real task against the local control plane and a real OpenSSH
 * server on 127.0.0.1 (this machine is the device), with the real aranya process (deploy/
 * ServiceAccount and RBAC) and the deployed arhat on Podman.
 *
 * The compiled arhat cannot be built here (deno compile downloads its denort runtime, and this
 * machine is offline), so the inventory points at an empty artifact folder with
 * `artifacts.launcher: true`: the deployer ships the launcher, which runs arhat with `deno run` and
 * exactly the permission set the compiled binary bakes in (ops/build/launcher_test.ts checks the
 * set is the project's).
 *
 * The device paths are the real ones (/usr/local/bin/arhat, /usr/local/lib/arhat, /etc/arhat,
 * /var/lib/arhat, /var/log/arhat.log), because the launcher's permission set allows exactly those;
 * the test refuses to run where an arhat it did not install is there, and removes all of it
 * afterwards.
 */
import assert from "node:assert/strict";
import { aranyaConfigYaml, waitAranyaReady } from "./aranya_harness.ts";
import { World } from "./edge_world.ts";
import { eventually, useCluster, useServices } from "./fixtures.ts";
import { freePort } from "./process.ts";
import { ROOT } from "./paths.ts";
import { sampleWorkload } from "./samples.ts";
import { startSshd } from "./services/sshd.ts";
import { PODMAN_DROP_IN, podmanDropIn } from "@aranya/ops/deploy/podman_config";
import { runDeployTask } from "@aranya/ops/deploy/testing/deploy_cli";

const MARKER = "/etc/arhat/.aranya-e2e";
const DEVICE_FILES = [
  "/usr/local/bin/arhat",
  "/usr/local/lib/arhat",
  "/etc/arhat",
  "/var/lib/arhat",
  "/var/log/arhat.log",
  PODMAN_DROP_IN,
];

/** Why this test cannot run here, if it cannot. */
function skipReason(): string | undefined {
  if (Deno.uid() !== 0) return "needs root: it installs arhat on this machine through its sshd";
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

const reason = skipReason();
if (reason) console.warn(`deploy e2e test skipped: ${reason}`);

async function sh(script: string): Promise<string> {
  const r = await new Deno.Command("sh", { args: ["-c", script], stdout: "piped", stderr: "piped" })
    .output();
  return new TextDecoder().decode(r.stdout).trim();
}

/** Stops the arhat the deployer started (its pid file) and removes everything it installed. */
async function removeDeployedArhat(): Promise<void> {
  await sh(
    'pid=$(cat /var/lib/arhat/arhat.pid 2>/dev/null) && [ -n "$pid" ] && kill -TERM "$pid" && ' +
      'for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; ' +
      'kill -KILL "$pid" 2>/dev/null; true',
  );
  await sh(`rm -rf ${DEVICE_FILES.join(" ")}`);
}

Deno.test({
  name: "deploy: launcher (no offline compile) over SSH to a Ready node running a workload; " +
    "dry run and re-run change nothing; bad hosts fail alone",
  ignore: reason !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const services = await useServices();
    const w = new World(cluster, services, "podman");
    const sshd = await startSshd();
    try {
      await w.init();
      await removeDeployedArhat();
      // The e2e permission set may not write /etc: sh may.
      await sh(`mkdir -p /etc/arhat && echo "installed by e2e/deploy_e2e_test.ts" >${MARKER}`);
      const good = `${w.ns}-good`;
      const refused = `${w.ns}-refused`;
      const unknownKey = `${w.ns}-unknown-key`;
      /** A progress line of `device`. */
      const at = (device: string, rest: string, flags = "") =>
        new RegExp(`\\[${w.ns}/${device}\\] ${rest}`, flags);

      // aranya as the e2e runs it: the deploy/ ServiceAccount's token, a websocket link.
      const linkPort = freePort();
      const httpPort = freePort();
      const aranya = await w.startAranya(aranyaConfigYaml({
        kubeconfig: w.kubeconfig,
        namespaces: [w.ns],
        httpPort,
        websocket: { port: linkPort, certFile: `${w.dir}/tls.crt`, keyFile: `${w.dir}/tls.key` },
        kubelet: { port: freePort(), portCount: 4 }, // one Node per EdgeDevice, bad ones too
        node: { heartbeat: "1s", leaseDuration: "10s" },
      }));
      await waitAranyaReady(aranya, httpPort);

      const emptyKnownHosts = `${w.dir}/empty_known_hosts`;
      await Deno.writeTextFile(emptyKnownHosts, "");
      const inventory = `${w.dir}/inventory.yaml`;
      await Deno.writeTextFile(
        inventory,
        `cluster: { kubeconfig: ${cluster.kubeconfig} }
aranya:
  tls: { certFile: tls.crt, keyFile: tls.key }
links:
  websocket: { url: "wss://localhost:${linkPort}/v1/link", caFile: ${w.arhatDir}/ca.crt }
artifacts: { dir: empty-dist, launcher: true }
timeouts: { credentials: 60s, nodeReady: 90s }
defaults:
  namespace: ${w.ns}
  user: root
  key: ${sshd.clientKeyFile}
  knownHosts: ${sshd.knownHostsFile}
  arch: ${Deno.build.arch}
  runtime: { endpoint: ${services.endpoints.podmanSocket}, infraImage: ${services.endpoints.testImage} }
devices:
  - name: ${good}
    address: 127.0.0.1:${sshd.port}
  - name: ${refused}
    address: 127.0.0.1:${freePort()}
  - name: ${unknownKey}
    address: 127.0.0.1:${sshd.port}
    knownHosts: empty_known_hosts
`,
      );
      await Deno.mkdir(`${w.dir}/empty-dist`, { recursive: true });
      /** Runs a step; a failed step ends the test (the later ones build on it). */
      const step = async (name: string, fn: () => Promise<void>) => {
        if (!await t.step(name, fn)) throw new Error(`Step "${name}" failed`);
      };
      const edgeDevice = (name: string) =>
        cluster.kubectl(["get", "edgedevice", "-n", w.ns, name, "-o", "json"]);

      await step("a dry run shows the plan and changes nothing", async () => {
        const r = await runDeployTask(["-i", inventory, "--dry-run"]);
        assert.equal(r.code, 1, r.out); // the two bad hosts fail in a dry run too
        assert.match(r.out, at(good, String.raw`EdgeDevice would be created`));
        assert.match(r.out, at(good, String.raw`files: would copy .*/usr/local/bin/arhat`));
        assert.match(r.out, at(good, String.raw`arhat: would start`));
        assert.match(r.out, /summary: 1 of 3 device\(s\) deployed/);
        assert.notEqual((await edgeDevice(good)).code, 0, "no EdgeDevice was stored");
        await assert.rejects(Deno.stat("/usr/local/bin/arhat"), "nothing was installed");
      });

      let pid = "";
      let workload = { uid: "", container: "" };
      let edgeDeviceVersion = "";
      await step("deploy: the good device ends Ready, the bad hosts fail alone", async () => {
        const r = await runDeployTask(["-i", inventory]);
        assert.equal(r.code, 1, r.out);
        assert.match(r.out, /aranya: applying deploy\//);
        assert.match(r.out, /Deployment aranya-system\/aranya (created|configured|unchanged)/);
        assert.match(r.out, at(good, String.raw`files: copied .* s, launcher\)`));
        assert.match(r.out, at(good, String.raw`arhat: started \(none\)`));
        assert.match(r.out, at(good, String.raw`Node "${good}" Ready`));
        assert.match(
          r.out,
          at(refused, String.raw`FAILED: .*127\.0\.0\.1:\d+.*refused`, "i"),
        );
        assert.match(
          r.out,
          at(
            unknownKey,
            String
              .raw`FAILED: Host key of "127\.0\.0\.1:\d+" \(SHA256:.+\) is not in ".*empty_known_hosts"`,
          ),
        );
        assert.match(r.out, /summary: 1 of 3 device\(s\) deployed/);
        await w.nodeReady(good, "True");
        // What the device got: the launcher with the project's permission set, config, token, CA.
        const shipped = JSON.parse(await Deno.readTextFile("/usr/local/lib/arhat/deno.json"));
        const project = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
        assert.deepEqual(shipped.permissions.arhat, project.permissions.arhat);
        assert.equal((await Deno.stat("/etc/arhat/token")).mode! & 0o777, 0o600);
        // The engine is Podman: its drop-in that ends finished exec sessions' conmons early.
        assert.equal(await Deno.readTextFile(PODMAN_DROP_IN), podmanDropIn());
        pid = (await Deno.readTextFile("/var/lib/arhat/arhat.pid")).trim();
        assert.match(await sh(`cat /proc/${pid}/cmdline | tr '\\0' ' '`), /-P=arhat/);
        edgeDeviceVersion = JSON.parse((await edgeDevice(good)).stdout).metadata
          .resourceVersion;
        assert.equal((await edgeDevice(refused)).code, 0, "its EdgeDevice exists");
      });

      await step("a workload scheduled on the device runs", async () => {
        await w.kubectl(
          ["apply", "-f", "-"],
          await sampleWorkload(good, services.endpoints.testImage),
        );
        const pod = await w.runningPod("app=edge-demo");
        assert.equal(pod.spec.nodeName, good);
        const [ctr] = await w.appContainers(pod.metadata.uid);
        assert.equal(ctr?.State, "running");
        workload = { uid: pod.metadata.uid, container: ctr!.Id };
      });

      await step("a re-run changes nothing", async () => {
        const mtime = (await Deno.stat("/usr/local/bin/arhat")).mtime?.getTime();
        const r = await runDeployTask(["-i", inventory, "--device", good]);
        assert.equal(r.code, 0, r.out);
        for (const line of r.out.split("\n").filter((l) => /^ {2}\S+ \S+ /.test(l))) {
          assert.match(line, / unchanged$/, `aranya object changed on a re-run: ${line}`);
        }
        assert.match(r.out, at(good, String.raw`EdgeDevice unchanged`));
        assert.match(r.out, at(good, String.raw`files: all \d+ up to date \(launcher\)`));
        assert.match(r.out, at(good, String.raw`arhat: running, unchanged`));
        assert.match(r.out, new RegExp(`${good}\\s+ok\\s+unchanged`));
        assert.doesNotMatch(r.out, /copied|started|restarted|created|configured/);
        assert.equal((await Deno.readTextFile("/var/lib/arhat/arhat.pid")).trim(), pid);
        assert.equal(await sh(`kill -0 ${pid} && echo alive`), "alive");
        assert.equal((await Deno.stat("/usr/local/bin/arhat")).mtime?.getTime(), mtime);
        const now = JSON.parse((await edgeDevice(good)).stdout).metadata.resourceVersion;
        assert.equal(now, edgeDeviceVersion);
        await eventually("Node still Ready", async () => {
          const n = await cluster.kubectl(["get", "node", good, "-o", "json"]);
          return JSON.parse(n.stdout).status.conditions.some((
              c: { type: string; status: string },
            ) => c.type === "Ready" && c.status === "True"
            )
            ? true
            : undefined;
        });
      });

      await step("a changed inventory copies only what changed and restarts arhat", async () => {
        const text = await Deno.readTextFile(inventory);
        await Deno.writeTextFile(
          inventory,
          text.replace(
            `  - name: ${good}\n`,
            `  - name: ${good}\n    host: { allowLogs: true }\n`,
          ),
        );
        const r = await runDeployTask(["-i", inventory, "--device", good]);
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, at(good, String.raw`files: copied /etc/arhat/config\.yaml \(`));
        assert.match(r.out, at(good, String.raw`arhat: restarted \(none\)`));
        assert.match(r.out, at(good, String.raw`Node "${good}" Ready`));
        assert.match(await Deno.readTextFile("/etc/arhat/config.yaml"), /allowLogs: true/);
        const now = (await Deno.readTextFile("/var/lib/arhat/arhat.pid")).trim();
        assert.notEqual(now, pid, "arhat was restarted");
        assert.equal(await sh(`kill -0 ${pid} 2>/dev/null || echo gone`), "gone");
        // The workload outlived arhat's restart: same container, still running, no restart.
        const [ctr] = await w.appContainers(workload.uid);
        assert.equal(ctr?.Id, workload.container);
        assert.equal(ctr?.State, "running");
        const pod = await w.runningPod("app=edge-demo");
        assert.equal(pod.status.containerStatuses[0].restartCount, 0);
      });
    } catch (err) {
      console.error(await w.tails());
      console.error(await sh("tail -n 40 /var/log/arhat.log 2>/dev/null"));
      throw err;
    } finally {
      // The namespace goes while aranya and the deployed arhat still run (they finish its pods).
      await w.close();
      await removeDeployedArhat();
      await sshd.stop();
      await services.release();
      await cluster.release();
    }
  },
});
