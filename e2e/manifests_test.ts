/**
 * The packaging files: deploy/Dockerfile (a distroless, non-root image of the compiled aranya with
 * its permission set baked in) and the Deployment agreeing with it, arhat's systemd unit
 * (deploy/arhat/arhat.service) agreeing with arhat and its config, and a server-side dry run of
 * every Kubernetes manifest under deploy/, the Ingress sample included, against the real API
 * server.
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { parseAranyaConfig, parseAranyaFlags } from "@aranya/aranya/config";
import { CONFIG_DEFAULTS as ARHAT_DEFAULTS, DEFAULT_CONFIG_PATH } from "@aranya/arhat/config";
import { artifactPath, compileArgs, TARGETS } from "@aranya/ops/build/compile";
import { applyCrds, eventually, useCluster } from "./fixtures.ts";
import { ROOT } from "./paths.ts";
import { SHIPPED_API } from "./aranya_harness.ts";

const DOCKERFILE = `${ROOT}/deploy/Dockerfile`;
const DEPLOYMENT = `${ROOT}/deploy/aranya/deployment.yaml`;
const SERVICE = `${ROOT}/deploy/aranya/service.yaml`;
const INGRESS = `${ROOT}/deploy/samples/ingress.yaml`;
const UNIT = `${ROOT}/deploy/arhat/arhat.service`;

// deno-lint-ignore no-explicit-any
type Obj = any;

/** The YAML documents of a file, as plain objects (empty documents dropped). */
async function yamlDocs(path: string): Promise<Obj[]> {
  const docs = parseAllDocuments(await Deno.readTextFile(path)).map((d) => d.toJS());
  return docs.filter((d) => d != null);
}

/** One Dockerfile instruction: keyword (upper case) and the rest of the line. */
interface Instruction {
  cmd: string;
  args: string;
}

/** One build stage: its FROM line's parts and its instructions. */
interface Stage {
  image: string;
  name?: string;
  platform?: string;
  instructions: Instruction[];
}

/**
 * Splits a Dockerfile into stages: comment lines dropped (also inside continued lines, as
 * Docker does), backslash continuations joined.
 */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = "";
  for (const line of text.split("\n")) {
    if (/^\s*#/.test(line)) continue;
    if (/\\\s*$/.test(line)) {
      current += line.replace(/\\\s*$/, "\n");
      continue;
    }
    current += line;
    if (current.trim()) logical.push(current.trim());
    current = "";
  }
  if (current.trim()) logical.push(current.trim());
  const stages: Stage[] = [];
  for (const l of logical) {
    const [, cmd = "", args = ""] = /^(\S+)\s*([^]*)$/.exec(l) ?? [];
    if (cmd.toUpperCase() === "FROM") {
      const m = /^(?:--platform=(\S+)\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(m, `FROM line "${args}" has an unexpected shape`);
      stages.push({
        image: m[2]!,
        ...(m[3] ? { name: m[3] } : {}),
        ...(m[1] ? { platform: m[1] } : {}),
        instructions: [],
      });
    } else {
      assert.ok(stages.length, `"${cmd}" before the first FROM`);
      stages.at(-1)!.instructions.push({ cmd: cmd.toUpperCase(), args });
    }
  }
  return stages;
}

function only(stage: Stage, cmd: string): string {
  const found = stage.instructions.filter((i) => i.cmd === cmd);
  assert.equal(found.length, 1, `one ${cmd} in the stage from "${stage.image}"`);
  return found[0]!.args;
}

/** Runs the `case ... esac` of the build stage's compile step with `arch`; returns $target. */
async function targetFor(run: string, arch: string): Promise<{ code: number; target: string }> {
  const c = /case[^]*?esac/.exec(run);
  assert.ok(c, "the compile step picks the target with a case statement");
  const out = await new Deno.Command("sh", {
    args: ["-c", `set -eu; ${c[0]}; printf '%s' "$target"`],
    env: { TARGETARCH: arch },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, target: new TextDecoder().decode(out.stdout) };
}

/** The Deployment and the aranya config in its ConfigMap, as the Deployment's args shape it. */
async function deploymentAndConfig() {
  const docs = await yamlDocs(DEPLOYMENT);
  const deployment = docs.find((d) => d.kind === "Deployment");
  const configMap = docs.find((d) => d.kind === "ConfigMap");
  assert.ok(deployment && configMap, "deployment.yaml holds a Deployment and its ConfigMap");
  const container = deployment.spec.template.spec.containers[0];
  const flags = parseAranyaFlags(
    container.args.map((a: string) => a.replace("$(POD_NAME)", "aranya-5d9c7-x2x7q")),
  );
  const config = parseAranyaConfig(configMap.data["config.yaml"], {
    env: { POD_IP: "10.0.0.7", POD_NAMESPACE: "aranya-system" },
    flags,
  });
  return { deployment, container, flags, config };
}

Deno.test("Dockerfile: the compiled aranya on distroless as a numeric non-root user", async () => {
  const stages = parseDockerfile(await Deno.readTextFile(DOCKERFILE));
  assert.equal(stages.length, 2, "a build stage and the runtime stage");
  const [build, final] = stages as [Stage, Stage];

  // Build stage: the pinned Deno, native on the build machine, frozen lockfile, the compile task.
  assert.equal(build.image, `denoland/deno:${Deno.version.deno}`);
  assert.equal(build.platform, "$BUILDPLATFORM");
  const runs = build.instructions.filter((i) => i.cmd === "RUN").map((i) => i.args);
  assert.ok(runs.some((r) => /^deno install --frozen$/.test(r)), "deno install --frozen");
  const compile = runs.find((r) => r.includes("deno task compile:aranya"));
  assert.ok(compile, "the build compiles with the project's compile task");
  assert.match(compile, /deno task compile:aranya --target "\$target"/);
  assert.ok(build.instructions.some((i) => i.cmd === "ARG" && i.args === "TARGETARCH"));
  // The task is ops/build/compile.ts, which bakes the "aranya" permission set in (-P=aranya).
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  assert.equal(
    config.tasks["compile:aranya"].command,
    "deno run -P=ops ops/build/compile.ts aranya",
  );
  assert.ok(config.permissions.aranya, 'deno.json defines the "aranya" permission set');
  for (const [arch, target] of [["amd64", TARGETS[0]], ["arm64", TARGETS[1]]] as const) {
    assert.deepEqual(await targetFor(compile, arch), { code: 0, target }, arch);
    const args = compileArgs({ program: "aranya", target });
    assert.ok(args.includes("-P=aranya"), args.join(" "));
    assert.ok(args.includes("--v8-flags=--optimize-for-size"), "the shipped V8 flags");
    // The artifact the compile step copies out is the one the task writes.
    assert.equal(
      compile.match(/cp "(dist\/aranya-\$target)"/)?.[1]?.replace("$target", target),
      artifactPath("dist", "aranya", target),
    );
  }
  assert.equal((await targetFor(compile, "s390x")).code, 1, "other architectures are refused");
  const out = /cp "dist\/aranya-\$target" (\S+)/.exec(compile)?.[1];

  // Runtime stage: distroless with glibc, the binary, a numeric non-root user, no shell needed.
  assert.equal(final.image, "gcr.io/distroless/cc-debian12:nonroot");
  assert.equal(only(final, "COPY"), `--from=${build.name} ${out} /usr/local/bin/aranya`);
  const user = only(final, "USER");
  assert.match(user, /^\d+:\d+$/, "numeric, so runAsNonRoot can be verified");
  assert.equal(user, "65532:65532");
  assert.deepEqual(JSON.parse(only(final, "ENTRYPOINT")), ["/usr/local/bin/aranya"]);
  const cmd = JSON.parse(only(final, "CMD"));
  assert.equal(parseAranyaFlags(cmd).config, "/etc/aranya/config.yaml");
  assert.deepEqual(
    final.instructions.filter((i) => i.cmd === "RUN"),
    [],
    "distroless has no shell",
  );

  // The build context leaves out what the image makes itself, and the repository's history.
  const ignored = (await Deno.readTextFile(`${ROOT}/.dockerignore`)).split("\n").map((l) =>
    l.trim()
  );
  for (const p of [".cache", "node_modules", "dist", ".git"]) assert.ok(ignored.includes(p), p);
});

Deno.test("the Deployment runs that image as the Dockerfile says, hardened", async () => {
  const stages = parseDockerfile(await Deno.readTextFile(DOCKERFILE));
  const final = stages.at(-1)!;
  const [uid, gid] = only(final, "USER").split(":").map(Number);
  const cmdConfig = parseAranyaFlags(JSON.parse(only(final, "CMD"))).config;
  const { deployment, container: c, flags, config } = await deploymentAndConfig();
  const pod = deployment.spec.template.spec;

  assert.equal(deployment.spec.replicas, 2);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.equal(pod.securityContext.runAsUser, uid);
  assert.equal(pod.securityContext.runAsGroup, gid);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
  assert.ok(c.livenessProbe?.httpGet?.path, "a liveness probe");
  assert.ok(c.readinessProbe?.httpGet?.path, "a readiness probe");
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory, "requests");
  assert.ok(c.resources.limits.memory, "a memory limit");
  assert.equal(config.membership.enabled, true, "two replicas share the devices");
  // The benches and tests measure at what is shipped.
  assert.deepEqual({ qps: config.api.qps, burst: config.api.burst }, SHIPPED_API);
  // No command override: the image's ENTRYPOINT runs, with the config where the image expects it.
  assert.equal(c.command, undefined);
  assert.equal(flags.config, cmdConfig);

  // Read-only root: the only writable place is the /tmp emptyDir, and whatever the environment
  // points Deno at (HOME, DENO_DIR) is under it.
  const writable = c.volumeMounts.filter((m: Obj) => !m.readOnly);
  assert.deepEqual(writable.map((m: Obj) => m.mountPath), ["/tmp"]);
  const tmp = pod.volumes.find((v: Obj) => v.name === writable[0].name);
  assert.ok(tmp.emptyDir, "/tmp is an emptyDir");
  for (const e of c.env.filter((e: Obj) => ["HOME", "DENO_DIR", "TMPDIR"].includes(e.name))) {
    assert.match(e.value, /^\/tmp(\/|$)/, `${e.name}=${e.value}`);
  }
});

/** A systemd unit file as sections of keys, each key with all its values in order. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = new Map();
      sections.set(head[1]!, section);
      continue;
    }
    const kv = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(line);
    assert.ok(kv && section, `line ${n + 1} "${line}" is neither a section nor Key=value in one`);
    section.set(kv[1]!, [...(section.get(kv[1]!) ?? []), kv[2]!.trim()]);
  }
  return sections;
}

Deno.test("arhat.service runs arhat with its config, restarts it, leaves pods alone", async () => {
  const unit = parseUnit(await Deno.readTextFile(UNIT));
  assert.deepEqual([...unit.keys()], ["Unit", "Service", "Install"]);
  const one = (section: string, key: string) => {
    const v = unit.get(section)?.get(key);
    assert.equal(v?.length, 1, `one ${key}= in [${section}]`);
    return v[0]!;
  };
  const all = (section: string, key: string) =>
    (unit.get(section)?.get(key) ?? []).flatMap((v) => v.split(/\s+/));

  const exec = one("Service", "ExecStart").split(/\s+/);
  assert.deepEqual(exec, ["/usr/local/bin/arhat", "-c", DEFAULT_CONFIG_PATH]);
  assert.equal(one("Service", "Restart"), "always");
  assert.ok(one("Service", "RestartSec"));
  assert.ok(one("Service", "TimeoutStopSec"));
  // Never the whole control group on stop: only arhat gets SIGTERM (pods belong to the engine).
  assert.ok(["mixed", "process"].includes(one("Service", "KillMode")));
  assert.equal(one("Install", "WantedBy"), "multi-user.target");
  assert.ok(all("Unit", "After").includes("network-online.target"));
  assert.ok(all("Unit", "Wants").includes("network-online.target"));
  assert.ok(all("Service", "Environment").includes("DENO_NO_UPDATE_CHECK=1"));
  assert.ok(all("Service", "Environment").includes("NO_COLOR=1"));
  assert.equal(one("Service", "LimitNOFILE"), "65536");
  // Root (engine socket, host management) and no sandbox that would make the host read-only.
  const service = unit.get("Service")!;
  for (const k of ["User", "DynamicUser", "ProtectSystem", "ProtectHome", "ReadOnlyPaths"]) {
    assert.equal(service.get(k), undefined, `${k}= is not set`);
  }

  // The directories systemd makes are the ones arhat and its permission set use.
  const stateDir = `/var/lib/${one("Service", "StateDirectory")}`;
  const configDir = `/etc/${one("Service", "ConfigurationDirectory")}`;
  assert.equal(stateDir, ARHAT_DEFAULTS.stateDir);
  assert.equal(configDir, DEFAULT_CONFIG_PATH.slice(0, DEFAULT_CONFIG_PATH.lastIndexOf("/")));
  const [sample] = await yamlDocs(`${ROOT}/deploy/arhat/config.sample.yaml`);
  assert.equal(sample.stateDir, stateDir);
  const set = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).permissions.arhat;
  assert.ok(set.read.includes(configDir) && set.read.includes(stateDir));
  assert.ok(set.write.includes(stateDir));

  // `-c` is arhat's config flag: given a missing file it reports that very path (exit code 2),
  // where an unknown flag would fail differently.
  const missing = `/tmp/aranya-e2e/no-such-arhat-config-${crypto.randomUUID()}.yaml`;
  const out = await new Deno.Command("deno", {
    args: ["run", "-P=arhat", "--no-prompt", "arhat/main.ts", exec[1]!, missing],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2, text);
  assert.ok(text.includes("invalid configuration") && text.includes(missing), text);
});

Deno.test("the Ingress sample routes the WebSocket link to aranya's Service", async () => {
  const [ingress, ...rest] = await yamlDocs(INGRESS);
  assert.equal(rest.length, 0);
  assert.equal(ingress.kind, "Ingress");
  assert.equal(ingress.apiVersion, "networking.k8s.io/v1");
  const service = (await yamlDocs(SERVICE)).find((d) => d.kind === "Service");
  assert.equal(ingress.metadata.namespace, service.metadata.namespace);
  assert.equal(ingress.spec.ingressClassName, "nginx");
  const [rule, ...moreRules] = ingress.spec.rules;
  assert.equal(moreRules.length, 0);
  assert.deepEqual(ingress.spec.tls.map((t: Obj) => t.hosts).flat(), [rule.host]);
  assert.ok(ingress.spec.tls[0].secretName);
  const [path, ...morePaths] = rule.http.paths;
  assert.equal(morePaths.length, 0, "only the WebSocket link: no gRPC, no MQTT");
  const { config } = await deploymentAndConfig();
  const ws = config.links.websocket;
  assert.ok(ws, "aranya's Deployment serves the websocket link");
  assert.equal(path.path, ws.path);
  assert.equal(path.backend.service.name, service.metadata.name);
  const port = service.spec.ports.find((p: Obj) => p.name === path.backend.service.port.name);
  assert.equal(port?.name, "websocket");
  assert.equal(port.port, ws.listen.port);
  const a = ingress.metadata.annotations;
  // aranya's listener has TLS, so nginx must speak HTTPS to it.
  assert.ok(ws.tls);
  assert.equal(a["nginx.ingress.kubernetes.io/backend-protocol"], "HTTPS");
  // Long-lived, mostly quiet WebSockets: timeouts far above the 120 s keepalive.
  for (const k of ["proxy-read-timeout", "proxy-send-timeout"]) {
    assert.ok(Number(a[`nginx.ingress.kubernetes.io/${k}`]) >= 600, k);
  }
});

/** Files under `dir` ending in .yaml or .yml, relative to {@link ROOT}, sorted. */
async function yamlFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}/${dir}`)) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory) found.push(...await yamlFiles(rel));
    else if (/\.ya?ml$/.test(e.name)) found.push(rel);
  }
  return found.sort();
}

Deno.test({
  name: "every Kubernetes manifest under deploy/ passes a server-side dry run",
  fn: async (t) => {
    const files = await yamlFiles("deploy");
    const manifests: string[] = [];
    const others: string[] = [];
    for (const f of files) {
      const docs = await yamlDocs(`${ROOT}/${f}`);
      (docs.length && docs.every((d) => d.apiVersion && d.kind) ? manifests : others).push(f);
    }
    // Anything else would be skipped silently: only the config samples and the deploy inventory
    // sample (ops/deploy/inventory_test.ts reads it) are not manifests.
    assert.deepEqual(others, [
      "deploy/aranya/config.sample.yaml",
      "deploy/arhat/config.sample.yaml",
      "deploy/samples/inventory.yaml",
    ]);
    assert.ok(manifests.includes("deploy/samples/ingress.yaml"));

    const cluster = await useCluster();
    try {
      await applyCrds(cluster); // the EdgeDevice samples need the CRD
      // A namespaced object's namespace must exist even for a dry run: create the ones these
      // files declare when missing. They stay, as applyAranyaRbac leaves aranya-system: other
      // tests on the same cluster apply into them, and could not while one is terminating.
      const namespaces = new Set<string>();
      for (const f of manifests) {
        for (const d of await yamlDocs(`${ROOT}/${f}`)) {
          if (d.kind === "Namespace") namespaces.add(d.metadata.name);
        }
      }
      for (const ns of namespaces) {
        await eventually(`namespace "${ns}" to exist and not be terminating`, async () => {
          const r = await cluster.kubectl([
            "get",
            "namespace",
            ns,
            "-o",
            "jsonpath={.status.phase}",
          ]);
          if (r.code === 0) return r.stdout === "Active" ? true : undefined;
          const c = await cluster.kubectl(["create", "namespace", ns]);
          if (c.code !== 0 && !/AlreadyExists/.test(c.stderr)) throw new Error(c.stderr);
          return undefined; // checked again on the next round
        });
      }
      for (const f of manifests) {
        await t.step(f, async () => {
          const r = await cluster.kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=aranya-e2e",
            "--dry-run=server",
            "-f",
            `${ROOT}/${f}`,
          ]);
          assert.equal(r.code, 0, r.stderr);
          // Every object of the file was sent and accepted.
          for (const d of await yamlDocs(`${ROOT}/${f}`)) {
            const kind = d.kind.toLowerCase();
            assert.match(
              r.stdout,
              new RegExp(`^${kind}(\\.[\\w.]+)?/${d.metadata.name} .*\\(server dry run\\)$`, "m"),
              r.stdout,
            );
          }
          assert.doesNotMatch(r.stderr, /Warning/i, r.stderr);
        });
      }
    } finally {
      await cluster.release();
    }
  },
});
