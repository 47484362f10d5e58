/**
 * Unit tests of the pure resolution logic with in-memory sources; the real
 * Secrets, ConfigMaps and TokenRequest are exercised in
 * aranya/virtualnode/pod_controller_test.ts against the real control plane.
 */
import assert from "node:assert/strict";
import type { V1ConfigMap, V1Pod, V1Secret } from "@kubernetes/client-node";
import { PullPolicy, RestartPolicy } from "@aranya/proto/gen/aranya/pod_pb";
import {
  expand,
  PodConfigError,
  podDns,
  podHostname,
  type PodSources,
  podSpecHash,
  registryHost,
  resolvePod,
} from "./resolve.ts";

const b64 = (s: string) => btoa(s);
const dec = new TextDecoder();

function sources(opts: { tokenFails?: boolean } = {}): PodSources & { tokenCalls: unknown[] } {
  const secrets: Record<string, V1Secret> = {
    creds: { metadata: { name: "creds" }, data: { password: b64("s3cret"), user: b64("bob") } },
    pull: {
      metadata: { name: "pull", namespace: "ns" },
      type: "kubernetes.io/dockerconfigjson",
      data: {
        ".dockerconfigjson": b64(JSON.stringify({
          auths: {
            "registry.local:5000": { auth: b64("puller:pw:with:colons") },
            "https://index.docker.io/v1/": { username: "hub", password: "hubpw" },
          },
        })),
      },
    },
  };
  const configMaps: Record<string, V1ConfigMap> = {
    app: { metadata: { name: "app" }, data: { MODE: "edge", "bad=key": "x", "app.conf": "a=1\n" } },
    "kube-root-ca.crt": { metadata: { name: "kube-root-ca.crt" }, data: { "ca.crt": "PEM" } },
  };
  const tokenCalls: unknown[] = [];
  return {
    tokenCalls,
    secret: (_ns, name) => Promise.resolve(secrets[name]),
    configMap: (_ns, name) => Promise.resolve(configMaps[name]),
    serviceAccountToken: (req) => {
      tokenCalls.push(req);
      return opts.tokenFails
        ? Promise.reject(new Error("forbidden"))
        : Promise.resolve("jwt-token");
    },
  };
}

function pod(spec: Partial<NonNullable<V1Pod["spec"]>>): V1Pod {
  return {
    metadata: {
      name: "web",
      namespace: "ns",
      uid: "uid-1",
      labels: { app: "web", tier: "edge" },
      annotations: { note: "hi" },
    },
    spec: { nodeName: "dev1", serviceAccountName: "default", containers: [], ...spec },
  };
}

Deno.test("env: plain with $(VAR) expansion, secret, configMap, field and resource refs, envFrom", async () => {
  const cmd = await resolvePod(
    pod({
      restartPolicy: "OnFailure",
      containers: [{
        name: "app",
        image: "registry.local:5000/app:1",
        imagePullPolicy: "Always",
        command: ["sh", "-c", "echo $(GREETING) $$(NOT)"],
        resources: { limits: { memory: "64Mi", cpu: "250m" } },
        envFrom: [{ configMapRef: { name: "app" }, prefix: "CM_" }, {
          secretRef: { name: "creds" },
        }],
        env: [
          { name: "NAME", value: "world" },
          { name: "GREETING", value: "hello $(NAME)" },
          { name: "PW", valueFrom: { secretKeyRef: { name: "creds", key: "password" } } },
          { name: "MODE", valueFrom: { configMapKeyRef: { name: "app", key: "MODE" } } },
          { name: "POD", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
          { name: "NS", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
          { name: "TIER", valueFrom: { fieldRef: { fieldPath: "metadata.labels['tier']" } } },
          { name: "HOST", valueFrom: { fieldRef: { fieldPath: "status.hostIP" } } },
          {
            name: "MEM",
            valueFrom: { resourceFieldRef: { resource: "limits.memory", divisor: "1Mi" } },
          },
          { name: "CPU", valueFrom: { resourceFieldRef: { resource: "limits.cpu" } } },
          {
            name: "OPT",
            valueFrom: { secretKeyRef: { name: "nope", key: "x", optional: true } },
          },
        ],
      }],
    }),
    { sources: sources(), hostIP: "10.0.0.7" },
  );
  const c = cmd.containers[0]!;
  assert.equal(cmd.restartPolicy, RestartPolicy.ON_FAILURE);
  assert.equal(c.pullPolicy, PullPolicy.ALWAYS);
  assert.deepEqual(c.command, ["sh", "-c", "echo hello world $(NOT)"]);
  assert.equal(c.env.GREETING, "hello world");
  assert.equal(c.env.PW, "s3cret");
  assert.equal(c.env.user, "bob");
  assert.equal(c.env.CM_MODE, "edge");
  assert.equal(c.env["CM_bad=key"], undefined);
  assert.equal(c.env.MODE, "edge");
  assert.equal(c.env.POD, "web");
  assert.equal(c.env.NS, "ns");
  assert.equal(c.env.TIER, "edge");
  assert.equal(c.env.HOST, "10.0.0.7");
  assert.equal(c.env.MEM, "64");
  assert.equal(c.env.CPU, "1");
  assert.ok(!("OPT" in c.env));
  assert.equal(c.memoryLimitBytes, 64n * 1024n * 1024n);
  assert.equal(c.cpuLimitMillis, 250n);
});

Deno.test("env: resourceFieldRef without a limit falls back to node allocatable", async () => {
  const cmd = await resolvePod(
    pod({
      containers: [{
        name: "a",
        image: "busybox",
        env: [{
          name: "M",
          valueFrom: { resourceFieldRef: { resource: "limits.memory", divisor: "1Mi" } },
        }],
      }],
    }),
    { sources: sources(), hostIP: "h", allocatable: { memory: "2Gi" } },
  );
  assert.equal(cmd.containers[0]!.env.M, "2048");
});

Deno.test("missing references fail with the field named; optional ones are skipped", async () => {
  const cases: [NonNullable<V1Pod["spec"]>["containers"][0], RegExp][] = [
    [
      { name: "a", env: [{ name: "X", valueFrom: { secretKeyRef: { name: "nope", key: "k" } } }] },
      /spec\.containers\[0\]\.env\[0\]\.valueFrom\.secretKeyRef: Secret "ns\/nope" not found/,
    ],
    [
      { name: "a", env: [{ name: "X", valueFrom: { secretKeyRef: { name: "creds", key: "k" } } }] },
      /key "k" not found in Secret "ns\/creds"/,
    ],
    [
      {
        name: "a",
        env: [{ name: "X", valueFrom: { configMapKeyRef: { name: "app", key: "k" } } }],
      },
      /configMapKeyRef: key "k" not found in ConfigMap "ns\/app"/,
    ],
    [
      { name: "a", envFrom: [{ secretRef: { name: "gone" } }] },
      /spec\.containers\[0\]\.envFrom\[0\]\.secretRef: Secret "ns\/gone" not found/,
    ],
    [
      { name: "a", env: [{ name: "X", valueFrom: { fieldRef: { fieldPath: "spec.bogus" } } }] },
      /fieldRef\.fieldPath: "spec\.bogus" is not supported/,
    ],
    [
      { name: "a", resources: { limits: { memory: "lots" } } },
      /spec\.containers\[0\]\.resources\.limits\.memory: "lots" is not a resource quantity/,
    ],
  ];
  for (const [container, re] of cases) {
    await assert.rejects(
      resolvePod(pod({ containers: [{ image: "i", ...container }] }), {
        sources: sources(),
        hostIP: "h",
      }),
      (err: unknown) => err instanceof PodConfigError && re.test(err.message),
    );
  }
  await assert.rejects(
    resolvePod(
      pod({
        containers: [{ name: "a", image: "i" }],
        volumes: [{ name: "data", persistentVolumeClaim: { claimName: "pvc" } }],
      }),
      { sources: sources(), hostIP: "h" },
    ),
    /spec\.volumes\[0\]: volume type "persistentVolumeClaim" is not supported on edge devices/,
  );
  await assert.rejects(
    resolvePod(
      pod({
        containers: [{ name: "a", image: "i" }],
        volumes: [{ name: "cfg", configMap: { name: "nope" } }],
      }),
      { sources: sources(), hostIP: "h" },
    ),
    /spec\.volumes\[0\]\.configMap: ConfigMap "ns\/nope" not found/,
  );
});

Deno.test("volumes: secret, configMap items, downwardAPI, emptyDir, hostPath, kube-api-access", async () => {
  const src = sources();
  const cmd = await resolvePod(
    pod({
      containers: [{
        name: "a",
        image: "i",
        volumeMounts: [{ name: "cfg", mountPath: "/etc/app", readOnly: true }],
      }],
      volumes: [
        { name: "sec", secret: { secretName: "creds", defaultMode: 0o400 } },
        {
          name: "cfg",
          configMap: { name: "app", items: [{ key: "app.conf", path: "conf/app.conf" }] },
        },
        {
          name: "info",
          downwardAPI: { items: [{ path: "labels", fieldRef: { fieldPath: "metadata.labels" } }] },
        },
        { name: "scratch", emptyDir: {} },
        { name: "dev", hostPath: { path: "/dev/ttyUSB0", type: "CharDevice" } },
        { name: "missing-ok", secret: { secretName: "nope", optional: true } },
        {
          name: "kube-api-access-abcde",
          projected: {
            defaultMode: 0o644,
            sources: [
              { serviceAccountToken: { expirationSeconds: 3607, path: "token" } },
              {
                configMap: { name: "kube-root-ca.crt", items: [{ key: "ca.crt", path: "ca.crt" }] },
              },
              {
                downwardAPI: {
                  items: [{ path: "namespace", fieldRef: { fieldPath: "metadata.namespace" } }],
                },
              },
            ],
          },
        },
      ],
    }),
    { sources: src, hostIP: "h" },
  );
  const files = (name: string) => {
    const v = cmd.volumes.find((x) => x.name === name)!;
    assert.equal(v.source.case, "data");
    return Object.fromEntries(
      (v.source.value as { files: { path: string; data: Uint8Array; mode: number }[] }).files.map(
        (f) => [f.path, { text: dec.decode(f.data), mode: f.mode }],
      ),
    );
  };
  assert.deepEqual(files("sec"), {
    password: { text: "s3cret", mode: 0o400 },
    user: { text: "bob", mode: 0o400 },
  });
  assert.deepEqual(files("cfg"), { "conf/app.conf": { text: "a=1\n", mode: 0o644 } });
  assert.deepEqual(files("info"), { labels: { text: 'app="web"\ntier="edge"', mode: 0o644 } });
  assert.deepEqual(files("missing-ok"), {});
  assert.deepEqual(files("kube-api-access-abcde"), {
    token: { text: "jwt-token", mode: 0o644 },
    "ca.crt": { text: "PEM", mode: 0o644 },
    namespace: { text: "ns", mode: 0o644 },
  });
  assert.deepEqual(src.tokenCalls, [{
    namespace: "ns",
    serviceAccount: "default",
    audiences: [],
    expirationSeconds: 3607,
    pod: { name: "web", uid: "uid-1" },
  }]);
  assert.equal(cmd.volumes.find((v) => v.name === "scratch")!.source.case, "emptyDir");
  assert.deepEqual(cmd.volumes.find((v) => v.name === "dev")!.source, {
    case: "hostPath",
    value: "/dev/ttyUSB0",
  });
  assert.equal(cmd.volumes.find((v) => v.name === "dev")!.hostPathType, "CharDevice");
  assert.deepEqual(cmd.containers[0]!.mounts.map((m) => [m.volume, m.mountPath, m.readOnly]), [[
    "cfg",
    "/etc/app",
    true,
  ]]);
});

Deno.test("a failed TokenRequest leaves the token out and warns, never failing the pod", async () => {
  const warnings: string[] = [];
  const cmd = await resolvePod(
    pod({
      containers: [{ name: "a", image: "i" }],
      volumes: [{
        name: "kube-api-access-x",
        projected: { sources: [{ serviceAccountToken: { path: "token" } }] },
      }],
    }),
    { sources: sources({ tokenFails: true }), hostIP: "h", warn: (m) => warnings.push(m) },
  );
  assert.equal(cmd.volumes.length, 1);
  assert.match(
    warnings.join("\n"),
    /serviceAccountToken: token request failed, "token" left out: forbidden/,
  );
});

Deno.test("imagePullSecrets become credentials for the images of their registry", async () => {
  const warnings: string[] = [];
  const cmd = await resolvePod(
    pod({
      imagePullSecrets: [{ name: "pull" }, { name: "absent" }],
      containers: [
        { name: "a", image: "registry.local:5000/team/app:1" },
        { name: "b", image: "busybox:1.36" },
        { name: "c", image: "quay.io/x/y" },
      ],
    }),
    { sources: sources(), hostIP: "h", warn: (m) => warnings.push(m) },
  );
  const auth = (image: string) =>
    cmd.imagePull[image]!.auth.map((a) => [a.server, a.username, a.password]);
  assert.deepEqual(auth("registry.local:5000/team/app:1"), [[
    "registry.local:5000",
    "puller",
    "pw:with:colons",
  ]]);
  assert.deepEqual(auth("busybox:1.36"), [["docker.io", "hub", "hubpw"]]);
  assert.deepEqual(auth("quay.io/x/y"), []);
  assert.match(warnings.join("\n"), /imagePullSecrets: Secret "ns\/absent" not found/);
});

Deno.test("spec hash: stable for the same spec, changed by an image update", async () => {
  const p = pod({ containers: [{ name: "a", image: "i:1" }] });
  const h1 = await podSpecHash(p);
  assert.equal(await podSpecHash(structuredClone(p)), h1);
  const q = structuredClone(p);
  q.spec!.containers[0]!.image = "i:2";
  assert.notEqual(await podSpecHash(q), h1);
  const r = structuredClone(p);
  r.metadata!.labels = { other: "label" };
  assert.equal(await podSpecHash(r), h1, "metadata changes do not restart containers");
});

Deno.test("expand and registryHost follow kubelet/docker rules", () => {
  assert.equal(expand("$(A)-$(B)-$$(A)-$(", { A: "1" }), "1-$(B)-$(A)-$(");
  assert.equal(registryHost("localhost/x:1"), "localhost");
  assert.equal(registryHost("library/busybox"), "docker.io");
  assert.equal(registryHost("127.0.0.1:5000/x"), "127.0.0.1:5000");
});

Deno.test("podDns follows dnsPolicy with the EdgeDevice's spec.pod.dns as the cluster DNS", () => {
  const device = { servers: ["10.53.0.10"], searches: ["svc.edge"], options: ["ndots:5"] };
  const cfg = {
    nameservers: ["1.1.1.1", "10.53.0.10"],
    searches: ["example.test"],
    options: [{ name: "ndots", value: "2" }, { name: "edns0" }],
  };
  // ClusterFirst (the default): the device's cluster DNS, then dnsConfig; dnsConfig's option
  // value wins, duplicates go.
  assert.deepEqual(podDns({ dnsConfig: cfg }, device), {
    servers: ["10.53.0.10", "1.1.1.1"],
    searches: ["svc.edge", "example.test"],
    options: ["ndots:2", "edns0"],
  });
  // Without spec.pod.dns, or with Default: the device's own resolvers plus dnsConfig.
  assert.deepEqual(podDns({ dnsConfig: cfg }, undefined).servers, ["1.1.1.1", "10.53.0.10"]);
  assert.deepEqual(podDns({ dnsPolicy: "Default" }, device), {
    servers: [],
    searches: [],
    options: [],
  });
  // hostNetwork with ClusterFirst falls back to Default; ClusterFirstWithHostNet does not.
  assert.deepEqual(podDns({ hostNetwork: true }, device).servers, []);
  assert.deepEqual(
    podDns({ hostNetwork: true, dnsPolicy: "ClusterFirstWithHostNet" }, device).servers,
    ["10.53.0.10"],
  );
  // None: dnsConfig alone.
  assert.deepEqual(podDns({ dnsPolicy: "None", dnsConfig: cfg }, device), {
    servers: ["1.1.1.1", "10.53.0.10"],
    searches: ["example.test"],
    options: ["ndots:2", "edns0"],
  });
});

Deno.test("probes, hooks and the container contract go to the device with named ports resolved", async () => {
  const cmd = await resolvePod(
    pod({
      securityContext: {
        fsGroup: 1234,
        supplementalGroups: [5],
        sysctls: [{ name: "net.ipv4.ip_local_port_range", value: "1024 65000" }],
        seLinuxOptions: { level: "s0:c0,c1", type: "spc_t" },
      },
      containers: [{
        name: "web",
        image: "busybox",
        ports: [{ name: "http", containerPort: 8080 }],
        env: [{ name: "MY_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } }],
        resources: { requests: { cpu: "250m", memory: "64Mi" } },
        securityContext: {
          runAsNonRoot: true,
          allowPrivilegeEscalation: false,
          seccompProfile: { type: "Unconfined" },
        },
        readinessProbe: {
          httpGet: { port: "http", path: "/ready", httpHeaders: [{ name: "X", value: "1" }] },
          periodSeconds: 2,
          successThreshold: 2,
        },
        livenessProbe: { tcpSocket: { port: 8080 }, terminationGracePeriodSeconds: 5 },
        startupProbe: { grpc: { port: 9000, service: "s" } },
        lifecycle: {
          postStart: { exec: { command: ["touch", "/tmp/x"] } },
          preStop: { sleep: { seconds: 3 } },
        },
        terminationMessagePath: "/tmp/msg",
        terminationMessagePolicy: "FallbackToLogsOnError",
      }],
    }),
    { sources: sources(), hostIP: "10.0.0.1" },
  );
  const c = cmd.containers[0]!;
  assert.deepEqual(c.readinessProbe?.action, {
    case: "httpGet",
    value: c.readinessProbe?.action.value,
  });
  const get = c.readinessProbe?.action.case === "httpGet"
    ? c.readinessProbe.action.value
    : undefined;
  assert.equal(get?.port, 8080, "the named port is resolved");
  assert.equal(get?.path, "/ready");
  assert.deepEqual(get?.headers.map((h) => [h.name, h.value]), [["X", "1"]]);
  assert.equal(c.readinessProbe?.periodSeconds, 2);
  assert.equal(c.readinessProbe?.successThreshold, 2);
  assert.equal(c.livenessProbe?.action.case, "tcpSocket");
  assert.equal(c.livenessProbe?.terminationGracePeriodSeconds, 5n);
  assert.equal(c.livenessProbe?.hasTerminationGracePeriodSeconds, true);
  assert.equal(c.startupProbe?.action.case, "grpc");
  assert.equal(c.postStart?.action.case, "exec");
  assert.deepEqual(c.preStop?.action, { case: "sleepSeconds", value: 3 });
  assert.equal(c.terminationMessagePath, "/tmp/msg");
  assert.equal(c.terminationMessageFallbackToLogs, true);
  assert.deepEqual(c.podIpEnv, ["MY_IP"]);
  assert.equal(c.cpuRequestMillis, 250n);
  assert.equal(c.memoryRequestBytes, 64n * 1024n * 1024n);
  assert.equal(c.runAsNonRoot, true);
  assert.equal(c.noNewPrivileges, true);
  assert.deepEqual(c.securityOpts, [
    "seccomp=unconfined",
    "label=type:spc_t",
    "label=level:s0:c0,c1",
  ]);
  assert.deepEqual(c.supplementalGroups, [5n]);
  assert.equal(cmd.hasFsGroup, true);
  assert.equal(cmd.fsGroup, 1234n);
  assert.deepEqual(cmd.sysctls, { "net.ipv4.ip_local_port_range": "1024 65000" });
});

Deno.test("fields a device cannot meet are refused, naming the field", async () => {
  const refused = async (c: Record<string, unknown>, re: RegExp) => {
    await assert.rejects(
      resolvePod(
        pod({ containers: [{ name: "app", image: "busybox", ...c }] }),
        { sources: sources(), hostIP: "10.0.0.1" },
      ),
      re,
    );
  };
  await refused(
    { readinessProbe: { httpGet: { port: "nope" } } },
    /spec\.containers\[0\]\.readinessProbe\.httpGet\.port: container "app" has no port named "nope"/,
  );
  await refused(
    { securityContext: { seccompProfile: { type: "Localhost", localhostProfile: "x.json" } } },
    /spec\.containers\[0\]\.securityContext\.seccompProfile: type "Localhost" is not supported/,
  );
  await refused(
    { securityContext: { seLinuxOptions: { level: "s0 x" } } },
    /securityContext\.seLinuxOptions\.level: "s0 x" is not an SELinux level/,
  );
  await refused(
    { securityContext: { procMount: "Unmasked" } },
    /securityContext\.procMount: "Unmasked" is not supported/,
  );
});

Deno.test("subPathExpr: expanded from env; missing values, absolute paths and '..' refused", async () => {
  const mount = (subPathExpr: string, env: { name: string; value: string }[]) =>
    pod({
      containers: [{
        name: "app",
        image: "busybox",
        env,
        volumeMounts: [{ name: "w", mountPath: "/w", subPathExpr }],
      }],
      volumes: [{ name: "w", emptyDir: {} }],
    });
  const ctx = { sources: sources(), hostIP: "10.0.0.1" };
  const ok = await resolvePod(
    mount("$(A)/$(B)", [{ name: "A", value: "x" }, { name: "B", value: "y" }]),
    ctx,
  );
  assert.equal(ok.containers[0]!.mounts[0]!.subPath, "x/y");
  await assert.rejects(
    resolvePod(mount("$(NOPE)", []), ctx),
    /volumeMounts\[0\]\.subPathExpr: missing value for "NOPE"/,
  );
  await assert.rejects(
    resolvePod(mount("$(P)", [{ name: "P", value: ".." }]), ctx),
    /volumeMounts\[0\]\.subPath: "\.\." must not contain "\.\."/,
  );
  await assert.rejects(
    resolvePod(mount("$(P)", [{ name: "P", value: "/tmp" }]), ctx),
    /must not be an absolute path/,
  );
});

Deno.test("podHostname: at most 63 characters, no trailing '-' or '.'", () => {
  assert.equal(podHostname("web"), "web");
  const long = "termination-message-container091ad9c5-fd3f-4459-a36b-8ff13b8e1b24";
  assert.equal(podHostname(long), long.slice(0, 63));
  assert.equal(podHostname(`${"a".repeat(62)}-bc`), "a".repeat(62));
});

Deno.test("envFrom keeps every key Kubernetes 1.34 allows (printable ASCII but '=')", async () => {
  const s = sources();
  s.configMap = (_ns, name) =>
    Promise.resolve(
      name === "cm"
        ? { metadata: { name }, data: { "data-1": "a", "1st.key": "b", "bad=key": "c" } }
        : undefined,
    );
  const warnings: string[] = [];
  const cmd = await resolvePod(
    pod({
      containers: [{
        name: "app",
        image: "busybox",
        envFrom: [{ configMapRef: { name: "cm" }, prefix: "p-" }],
      }],
    }),
    { sources: s, hostIP: "10.0.0.1", warn: (m) => warnings.push(m) },
  );
  const env = cmd.containers[0]!.env;
  assert.equal(env["p-data-1"], "a");
  assert.equal(env["p-1st.key"], "b");
  assert.equal(env["p-bad=key"], undefined);
  assert.match(warnings.join("\n"), /"bad=key" is not a valid environment variable name/);
});
