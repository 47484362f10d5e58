/**
 * deploy/aranya/: the ServiceAccount aranya-system/aranya gets exactly what
 * aranya needs (`kubectl auth can-i --as` yes for every rule, no for a set of
 * things it never does), the manifests pass a server-side dry run without
 * Pod Security warnings, and the Deployment's shape and embedded config are
 * what the docs promise (parsed with aranya's own config parser).
 */
import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { parseAranyaConfig, parseAranyaFlags } from "@aranya/aranya/config";
import { applyAranyaRbac, ARANYA_USER, DEPLOY_DIR } from "./aranya_harness.ts";
import { applyCrds, uniqueName, useCluster } from "./fixtures.ts";

/**
 * One `kubectl auth can-i` question: verb, resource[.group], optional subresource, namespace and
 * object name.
 */
type Ask = [verb: string, resource: string, opts?: { sub?: string; ns?: string; name?: string }];

const ED = "edgedevices.aranya.arhat.dev";
const LEASES = "leases.coordination.k8s.io";
const CSRS = "certificatesigningrequests.certificates.k8s.io";
const SIGNERS = "signers.certificates.k8s.io";
/** Namespaced rules of the ClusterRole hold in every namespace: asked with -A. */
const ALL = { ns: "*" };

const ALLOWED: Ask[] = [
  ...["get", "list", "watch", "update", "patch"].map((v): Ask => [v, ED, ALL]),
  ...["get", "update", "patch"].map((v): Ask => [v, ED, { ...ALL, sub: "status" }]),
  ...["get", "list", "watch", "create", "update", "patch", "delete"].map((v): Ask => [v, "nodes"]),
  ...["get", "update", "patch"].map((v): Ask => [v, "nodes", { sub: "status" }]),
  // Namespace labels, for spec.pod.allowedNamespaceSelector (one watch).
  ...["get", "list", "watch"].map((v): Ask => [v, "namespaces"]),
  ...["get", "list", "watch", "create", "delete"].map((v): Ask => [v, "pods", ALL]),
  ...["get", "update", "patch"].map((v): Ask => [v, "pods", { ...ALL, sub: "status" }]),
  ...["get", "create", "delete"].map((v): Ask => [v, "secrets", ALL]),
  ["get", "configmaps", ALL],
  ["create", "serviceaccounts", { ...ALL, sub: "token" }],
  ...["create", "patch", "update"].map((v): Ask => [v, "events", ALL]),
  ...["create", "patch", "update"].map((v): Ask => [v, "events.events.k8s.io", ALL]),
  ...["get", "create", "update", "delete"].map((v): Ask => [v, LEASES, { ns: "kube-node-lease" }]),
  // Membership: its own Lease (created, renewed, deleted on shutdown) and one watch on all of them.
  ...["get", "list", "watch", "create", "update", "delete"].map((v): Ask => [
    v,
    LEASES,
    { ns: "aranya-system" },
  ]),
  // The kubelet API server: caller authentication and authorization, its serving certificate
  // (a CSR it approves itself, for the kubelet serving signer only) and the client CA.
  ["create", "tokenreviews.authentication.k8s.io"],
  ["create", "subjectaccessreviews.authorization.k8s.io"],
  ...["create", "get", "delete"].map((v): Ask => [v, CSRS]),
  ["update", CSRS, { sub: "approval" }],
  ["approve", SIGNERS, { name: "kubernetes.io/kubelet-serving" }],
  ...["get", "list", "watch"].map((v): Ask => [v, "configmaps", {
    ns: "kube-system",
    name: "extension-apiserver-authentication",
  }]),
];

const REFUSED: Ask[] = [
  ["delete", "namespaces"],
  ["create", "namespaces"],
  ["update", "namespaces"],
  ["patch", "namespaces"],
  ["create", "clusterrolebindings.rbac.authorization.k8s.io"],
  ["create", "clusterroles.rbac.authorization.k8s.io"],
  ["escalate", "clusterroles.rbac.authorization.k8s.io"],
  ["create", "rolebindings.rbac.authorization.k8s.io", { ns: "aranya-system" }],
  ["create", "deployments.apps", ALL],
  ["delete", "customresourcedefinitions.apiextensions.k8s.io"],
  ["create", "customresourcedefinitions.apiextensions.k8s.io"],
  ["create", ED, ALL],
  ["delete", ED, ALL],
  // Secrets and ConfigMaps are read by name only: no list or watch anywhere.
  ["list", "secrets", ALL],
  ["watch", "secrets", ALL],
  ["list", "secrets", { ns: "kube-system" }],
  ["list", "configmaps", ALL],
  ["watch", "configmaps", ALL],
  ["update", "pods", ALL],
  ["patch", "pods", ALL],
  ["update", "secrets", ALL],
  ["patch", "secrets", ALL],
  ["update", "configmaps", ALL],
  ["get", "serviceaccounts", ALL],
  ["create", "pods", { ...ALL, sub: "exec" }],
  ["get", "nodes", { sub: "proxy" }],
  ["impersonate", "users"],
  ["update", LEASES, { ns: "default" }],
  ["create", LEASES, { ns: "kube-system" }],
  ["list", LEASES, { ns: "kube-node-lease" }],
  ["delete", LEASES, { ns: "kube-system" }],
  ["*", "*", ALL],
  // Certificates: approve for no other signer, never sign, never touch other CSRs' specs.
  ["approve", SIGNERS, { name: "kubernetes.io/kube-apiserver-client" }],
  ["approve", SIGNERS, { name: "kubernetes.io/kube-apiserver-client-kubelet" }],
  ["approve", SIGNERS, { name: "kubernetes.io/legacy-unknown" }],
  ["approve", SIGNERS, { name: "example.com/other" }],
  ["sign", SIGNERS, { name: "kubernetes.io/kubelet-serving" }],
  ["update", CSRS, { sub: "status" }],
  ["update", CSRS],
  ["patch", CSRS, { sub: "approval" }],
  ["deletecollection", CSRS],
  ["create", "localsubjectaccessreviews.authorization.k8s.io", { ns: "default" }],
  ["update", "configmaps", { ns: "kube-system", name: "extension-apiserver-authentication" }],
];

function canIArgs([verb, resource, o]: Ask): string[] {
  const target = o?.name ? `${resource}/${o.name}` : resource;
  const args = ["auth", "can-i", verb, target, `--as=${ARANYA_USER}`];
  if (o?.sub) args.push(`--subresource=${o.sub}`);
  if (o?.ns === "*") args.push("--all-namespaces");
  else if (o?.ns) args.push("-n", o.ns);
  return args;
}

/**
 * A SubjectAccessReview asking `a` for aranya's ServiceAccount (with the groups the API server
 * gives its tokens), as JSON for `kubectl create -f -`.
 */
function sarFor([verb, resource, o]: Ask): string {
  const [plural, ...group] = resource.split(".");
  return JSON.stringify({
    apiVersion: "authorization.k8s.io/v1",
    kind: "SubjectAccessReview",
    spec: {
      user: ARANYA_USER,
      groups: [
        "system:serviceaccounts",
        "system:serviceaccounts:aranya-system",
        "system:authenticated",
      ],
      resourceAttributes: {
        verb,
        group: group.join("."),
        resource: plural,
        ...(o?.name ? { name: o.name } : {}),
        ...(o?.sub ? { subresource: o.sub } : {}),
        ...(o?.ns && o.ns !== "*" ? { namespace: o.ns } : {}),
      },
    },
  });
}

const show = ([verb, resource, o]: Ask) =>
  `${verb} ${resource}${o?.name ? ` "${o.name}"` : ""}${o?.sub ? `/${o.sub}` : ""}${
    o?.ns === "*" ? " (all namespaces)" : o?.ns ? ` -n ${o.ns}` : ""
  }`;

/** Runs kubectl as aranya's ServiceAccount (impersonated by the admin). */
const AS_ARANYA = [
  `--as=${ARANYA_USER}`,
  "--as-group=system:serviceaccounts",
  "--as-group=system:serviceaccounts:aranya-system",
  "--as-group=system:authenticated",
];

/** The files of deploy/aranya/ that are Kubernetes manifests (config.sample.yaml is not). */
const MANIFESTS = [
  "namespace.yaml",
  "rbac.yaml",
  "admission.yaml",
  "deployment.yaml",
  "service.yaml",
].map((f) => `${DEPLOY_DIR}/${f}`);

Deno.test("aranya's RBAC allows what aranya needs and refuses the rest", async (t) => {
  const cluster = await useCluster();
  try {
    await applyCrds(cluster); // so that can-i resolves edgedevices
    await applyAranyaRbac(cluster);
    const ask = async (a: Ask) => {
      if (a[1] === SIGNERS) {
        // Signers are not in discovery, so `can-i` cannot name them: ask with a SubjectAccessReview.
        const r = await cluster.kubectl(["create", "-o", "json", "-f", "-"], sarFor(a));
        const answer = r.code === 0 ? (JSON.parse(r.stdout).status?.allowed ? "yes" : "no") : "";
        return { ask: show(a), answer, code: r.code, stderr: r.stderr.trim() };
      }
      const r = await cluster.kubectl(canIArgs(a));
      return { ask: show(a), answer: r.stdout.trim(), code: r.code, stderr: r.stderr.trim() };
    };
    await t.step("every needed rule is granted", async () => {
      const answers = await Promise.all(ALLOWED.map(ask));
      const missing = answers.filter((a) => a.answer !== "yes");
      assert.deepEqual(missing, [], `refused but needed: ${missing.map((m) => m.ask).join("; ")}`);
    });
    await t.step("nothing beyond it", async () => {
      const answers = await Promise.all(REFUSED.map(ask));
      const extra = answers.filter((a) => a.answer !== "no");
      assert.deepEqual(extra, [], `granted but not needed: ${extra.map((m) => m.ask).join("; ")}`);
    });
    await t.step("dangerous requests sent as aranya are refused; its own work passes", async () => {
      const ns = uniqueName("rbac");
      const id = crypto.randomUUID().slice(0, 8);
      const real = `real-node-${id}`;
      const edge = `edge-node-${id}`;
      const asAranya = (args: string[], stdin?: string) =>
        cluster.kubectl([...AS_ARANYA, ...args], stdin);
      const refused = async (what: string, args: string[], stdin?: string, want?: RegExp) => {
        const r = await asAranya(args, stdin);
        assert.notEqual(r.code, 0, `${what}: allowed, but must be refused`);
        assert.match(r.stderr, want ?? /forbidden|denied/i, `${what}: ${r.stderr}`);
      };
      const node = (name: string, edgeNode: boolean) =>
        JSON.stringify({
          apiVersion: "v1",
          kind: "Node",
          metadata: {
            name,
            ...(edgeNode
              ? {
                labels: { "arhat.dev/role": "EdgeDevice", "arhat.dev/namespace": ns },
                annotations: { "aranya.arhat.dev/edge-device-uid": crypto.randomUUID() },
              }
              : {}),
          },
        });
      try {
        await cluster.kubectlOk(["create", "namespace", ns]);
        await cluster.kubectlOk(["apply", "-f", "-"], node(real, false));
        // RBAC: Secrets are never listed, by aranya or anyone holding its token.
        await refused("list secrets cluster-wide", ["get", "secrets", "-A"]);
        await refused("list kube-system's secrets", ["get", "secrets", "-n", "kube-system"]);
        // Admission (aranya-edge-nodes): a real node is out of reach.
        await refused(
          "create a non-edge Node",
          ["create", "-f", "-"],
          node(`x-${real}`, false),
          /aranya may create only edge Nodes/,
        );
        await refused(
          "label a non-edge Node",
          ["label", "node", real, "arhat.dev/role=EdgeDevice"],
          undefined,
          /aranya may change only edge Nodes/,
        );
        await refused(
          "delete a non-edge Node",
          ["delete", "node", real],
          undefined,
          /aranya may delete only edge Nodes/,
        );
        // ... while edge Nodes are its own to create, change and delete.
        const created = await asAranya(["create", "-f", "-"], node(edge, true));
        assert.equal(created.code, 0, created.stderr);
        await refused(
          "change whose an edge Node is",
          ["annotate", "node", edge, "--overwrite", "aranya.arhat.dev/edge-device-uid=other"],
          undefined,
          /never whose they are/,
        );
        const deleted = await asAranya(["delete", "node", edge]);
        assert.equal(deleted.code, 0, deleted.stderr);
        // Admission (aranya-pod-tokens): no token that is not bound to a pod, none in kube-system.
        await refused(
          "a token for kube-system's default ServiceAccount",
          ["create", "token", "default", "-n", "kube-system"],
          undefined,
          /aranya may request only tokens bound to a pod/,
        );
        await refused(
          "a pod-bound token in kube-system",
          [
            "create",
            "token",
            "default",
            "-n",
            "kube-system",
            "--bound-object-kind=Pod",
            "--bound-object-name=x",
            "--bound-object-uid=00000000-0000-0000-0000-000000000000",
          ],
          undefined,
          /aranya may not request tokens for ServiceAccounts of namespace "kube-system"/,
        );
        // Admission (aranya-pods): no pod but a virtual pod; no deletion it did not finish.
        await refused(
          "create a privileged pod",
          ["create", "-n", ns, "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "root" },
            spec: {
              hostPID: true,
              automountServiceAccountToken: false,
              containers: [{
                name: "c",
                image: "busybox",
                securityContext: { privileged: true },
              }],
            },
          }),
          /aranya may create only virtual pods/,
        );
        await cluster.kubectlOk(
          ["apply", "-n", ns, "-f", "-"],
          JSON.stringify({
            apiVersion: "v1",
            kind: "Pod",
            metadata: { name: "running" },
            spec: { containers: [{ name: "c", image: "busybox" }] },
          }),
        );
        await refused(
          "delete a pod nobody asked to delete",
          ["delete", "pod", "running", "-n", ns, "--wait=false"],
          undefined,
          /aranya may delete only virtual pods and pods whose deletion was already requested/,
        );
      } finally {
        await cluster.kubectl(["delete", "node", real, edge, `x-${real}`, "--ignore-not-found"]);
        await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
      }
    });

    await t.step(
      "aranya-devices bound in one namespace (namespaced mode) grants nothing elsewhere",
      async () => {
        const served = uniqueName("rbac-served");
        const other = uniqueName("rbac-other");
        const user = `system:serviceaccount:${served}:aranya-scoped`;
        try {
          for (const ns of [served, other]) await cluster.kubectlOk(["create", "namespace", ns]);
          await cluster.kubectlOk(["create", "serviceaccount", "aranya-scoped", "-n", served]);
          await cluster.kubectlOk([
            "create",
            "rolebinding",
            "aranya-devices",
            "-n",
            served,
            "--clusterrole=aranya-devices",
            `--serviceaccount=${served}:aranya-scoped`,
          ]);
          const can = async (verb: string, what: string, ns: string | "*", sub?: string) => {
            const r = await cluster.kubectl([
              "auth",
              "can-i",
              verb,
              what,
              `--as=${user}`,
              ...(sub ? [`--subresource=${sub}`] : []),
              ...(ns === "*" ? ["--all-namespaces"] : ["-n", ns]),
            ]);
            return r.stdout.trim();
          };
          for (
            const [verb, what, sub] of [
              ["get", "secrets"],
              ["list", "pods"],
              ["watch", "edgedevices.aranya.arhat.dev"],
              ["create", "serviceaccounts", "token"],
            ] as const
          ) {
            assert.equal(await can(verb, what, served, sub), "yes", `${verb} ${what} in ${served}`);
            assert.equal(await can(verb, what, other, sub), "no", `${verb} ${what} in ${other}`);
          }
          assert.equal(await can("list", "pods", "*"), "no", "no pods cluster-wide");
        } finally {
          for (const ns of [served, other]) {
            await cluster.kubectl(["delete", "namespace", ns, "--wait=false"]);
          }
        }
      },
    );

    await t.step("no wildcards in the rules", async () => {
      const docs = parseAllDocuments(await Deno.readTextFile(`${DEPLOY_DIR}/rbac.yaml`)).map((
        d,
      ) => d.toJS());
      for (const d of docs.filter((d) => d.kind === "ClusterRole" || d.kind === "Role")) {
        for (const rule of d.rules) {
          for (const field of ["apiGroups", "resources", "verbs"]) {
            assert.ok(!rule[field].includes("*"), `${d.kind} ${d.metadata.name}: "*" in ${field}`);
          }
        }
      }
    });
    await t.step("the manifests pass a server-side dry run without warnings", async () => {
      const r = await cluster.kubectl([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=aranya-e2e",
        "--dry-run=server",
        ...MANIFESTS.flatMap((f) => ["-f", f]),
      ]);
      assert.equal(r.code, 0, r.stderr);
      for (
        const o of [
          "namespace/aranya-system",
          "clusterrole.rbac.authorization.k8s.io/aranya",
          "clusterrole.rbac.authorization.k8s.io/aranya-devices",
          "validatingadmissionpolicy.admissionregistration.k8s.io/aranya-edge-nodes",
          "validatingadmissionpolicybinding.admissionregistration.k8s.io/aranya-pods",
          "configmap/aranya-config",
          "deployment.apps/aranya",
          "service/aranya",
        ]
      ) assert.match(r.stdout, new RegExp(`${o} .*\\(server dry run\\)`));
      // e.g. `Warning: would violate PodSecurity "restricted:latest": ...`
      assert.doesNotMatch(r.stderr, /Warning/i, r.stderr);
    });
  } finally {
    await cluster.release();
  }
});

Deno.test("aranya's Deployment: two replicas, probes, hardened, config from a ConfigMap", async () => {
  const docs = parseAllDocuments(await Deno.readTextFile(`${DEPLOY_DIR}/deployment.yaml`)).map((
    d,
  ) => d.toJS());
  const deployment = docs.find((d) => d.kind === "Deployment");
  const configMap = docs.find((d) => d.kind === "ConfigMap");
  assert.ok(deployment && configMap);
  const spec = deployment.spec.template.spec;
  assert.equal(deployment.spec.replicas, 2);
  assert.equal(spec.serviceAccountName, "aranya");
  assert.equal(spec.securityContext.runAsNonRoot, true);
  assert.equal(spec.securityContext.seccompProfile.type, "RuntimeDefault");
  const c = spec.containers[0];
  assert.equal(c.image, "ghcr.io/arhat-dev/aranya:0.1.0");
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.equal(c.securityContext.allowPrivilegeEscalation, false);
  assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
  assert.ok(c.resources.requests.cpu && c.resources.requests.memory && c.resources.limits.memory);
  assert.deepEqual(c.livenessProbe.httpGet, { path: "/healthz", port: "http" });
  assert.deepEqual(c.readinessProbe.httpGet, { path: "/readyz", port: "http" });
  const ports = Object.fromEntries(
    c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
  );

  // The args as the kubelet passes them ($(POD_NAME) expanded), through aranya's own parsers.
  const flags = parseAranyaFlags(
    c.args.map((a: string) => a.replace("$(POD_NAME)", "aranya-5d9c7-x2x7q")),
  );
  const mount = (name: string) =>
    c.volumeMounts.find((m: { name: string }) => m.name === name).mountPath;
  assert.equal(flags.config, mount("config"));
  const vol = (name: string) => spec.volumes.find((v: { name: string }) => v.name === name);
  assert.equal(vol("config").configMap.name, configMap.metadata.name);
  assert.equal(vol("tls").secret.secretName, "aranya-tls");
  const config = parseAranyaConfig(configMap.data["config.yaml"], {
    env: { POD_IP: "10.0.0.7", POD_NAMESPACE: "aranya-system" },
    flags,
  });
  assert.equal(config.membership.enabled, true);
  assert.equal(config.membership.namespace, "aranya-system");
  assert.equal(config.membership.identity, "aranya-5d9c7-x2x7q");
  assert.equal(config.kubelet.address, "10.0.0.7");
  assert.equal(config.kubeconfig, undefined, "in-cluster: the service account's token");
  assert.equal(config.http.listen.port, ports.http);
  assert.equal(config.links.websocket?.listen.port, ports.websocket);
  assert.equal(config.links.grpc?.listen.port, ports.grpc);
  assert.equal(config.kubelet.port, ports.kubelet);
  for (const tls of [config.links.websocket?.tls, config.links.grpc?.tls]) {
    assert.ok(tls?.certFile.startsWith(`${mount("tls")}/`));
    assert.ok(tls?.keyFile.startsWith(`${mount("tls")}/`));
  }

  // The Service reaches the named container ports.
  const service = parseAllDocuments(await Deno.readTextFile(`${DEPLOY_DIR}/service.yaml`))
    .map((d) => d.toJS()).find((d) => d.kind === "Service");
  const svcPorts = Object.fromEntries(
    service.spec.ports.map((p: { name: string; port: number; targetPort: string }) => [
      p.name,
      [p.port, p.targetPort],
    ]),
  );
  assert.deepEqual(svcPorts, {
    websocket: [8443, "websocket"],
    grpc: [8444, "grpc"],
    kubelet: [10250, "kubelet"],
  });
  assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
});
