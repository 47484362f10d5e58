import assert from "node:assert/strict";
import type { V1ContainerPort, V1Pod } from "@kubernetes/client-node";
import {
  admission,
  hostPorts,
  MESSAGE_NODE_PORTS,
  podRequests,
  REASON_NODE_PORTS,
  type Rejection,
} from "./admission.ts";

interface PodInit {
  created?: string;
  ports?: V1ContainerPort[];
  requests?: Record<string, string>;
  started?: boolean;
}

function pod(name: string, o: PodInit = {}): V1Pod {
  return {
    metadata: {
      name,
      namespace: "ns",
      uid: `uid-${name}`,
      creationTimestamp: new Date(o.created ?? "2026-01-01T00:00:00Z"),
    },
    spec: {
      nodeName: "edge",
      containers: [{
        name: "c",
        image: "busybox",
        ports: o.ports,
        resources: o.requests ? { requests: o.requests } : undefined,
      }],
    },
    status: o.started ? { phase: "Running", startTime: new Date("2026-01-01T00:00:00Z") } : {},
  };
}

const started = (p: V1Pod) => Boolean(p.status?.startTime);
const rejections = (pods: V1Pod[], allocatable?: Record<string, string>) =>
  Object.fromEntries(admission(pods, { admitted: started, allocatable }));
const NODE_PORTS: Rejection = { reason: REASON_NODE_PORTS, message: MESSAGE_NODE_PORTS };

Deno.test("admission: a host port another pod of the node holds is rejected as NodePorts", () => {
  const running = pod("test-pod", { ports: [{ containerPort: 21017, hostPort: 21017 }] });
  running.status = { phase: "Running", startTime: new Date() };
  // Created earlier than the running pod, but the running pod was admitted first: it wins.
  const newer = pod("ss-0", {
    created: "2025-12-31T00:00:00Z",
    ports: [{ containerPort: 80 }, { containerPort: 21017, hostPort: 21017 }],
  });
  assert.deepEqual(rejections([newer, running]), { "uid-ss-0": NODE_PORTS });
  assert.equal(
    MESSAGE_NODE_PORTS,
    "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
  );
});

Deno.test("admission: among pods not admitted yet the older one wins, whatever the input order", () => {
  const a = pod("a", {
    created: "2026-01-01T00:00:01Z",
    ports: [{ containerPort: 1, hostPort: 80 }],
  });
  const b = pod("b", {
    created: "2026-01-01T00:00:02Z",
    ports: [{ containerPort: 1, hostPort: 80 }],
  });
  assert.deepEqual(rejections([a, b]), { "uid-b": NODE_PORTS });
  assert.deepEqual(rejections([b, a]), { "uid-b": NODE_PORTS });
  // Same creation time: namespace/name decides.
  const c = pod("c", { ports: [{ containerPort: 1, hostPort: 81 }] });
  const d = pod("d", { ports: [{ containerPort: 1, hostPort: 81 }] });
  assert.deepEqual(rejections([d, c]), { "uid-d": NODE_PORTS });
  // A rejected pod holds nothing: a third pod conflicting only with it is admitted.
  const e = pod("e", {
    created: "2026-01-01T00:00:03Z",
    ports: [{ containerPort: 1, hostPort: 90 }],
  });
  const b2 = pod("b", {
    created: "2026-01-01T00:00:02Z",
    ports: [{ containerPort: 1, hostPort: 80 }, { containerPort: 2, hostPort: 90 }],
  });
  assert.deepEqual(rejections([e, b2, a]), { "uid-b": NODE_PORTS });
});

Deno.test("admission: host ports clash by protocol, port and host IP (0.0.0.0 or empty: all)", () => {
  const held = pod("held", {
    started: true,
    ports: [
      { containerPort: 1, hostPort: 53, protocol: "UDP" },
      { containerPort: 2, hostPort: 8080, hostIP: "10.0.0.1" },
    ],
  });
  const check = (p: V1ContainerPort) =>
    admission([held, pod("new", { ports: [p] })], { admitted: started }).has("uid-new");
  assert.equal(check({ containerPort: 1, hostPort: 53 }), false, "TCP 53 is free");
  assert.equal(check({ containerPort: 1, hostPort: 53, protocol: "UDP" }), true);
  assert.equal(check({ containerPort: 1, hostPort: 8080, hostIP: "10.0.0.2" }), false);
  assert.equal(check({ containerPort: 1, hostPort: 8080, hostIP: "10.0.0.1" }), true);
  assert.equal(check({ containerPort: 1, hostPort: 8080 }), true, "all addresses include it");
  assert.equal(check({ containerPort: 1, hostPort: 8080, hostIP: "0.0.0.0" }), true);
  assert.equal(check({ containerPort: 8080 }), false, "no hostPort: nothing on the host");
  // Pods already admitted are never rejected, even when they clash with each other.
  const twin = pod("twin", {
    started: true,
    ports: [{ containerPort: 1, hostPort: 53, protocol: "UDP" }],
  });
  assert.deepEqual(rejections([held, twin]), {});
});

Deno.test("admission: host ports of containers and restartable init containers", () => {
  const p = pod("p", { ports: [{ containerPort: 1, hostPort: 10 }] });
  p.spec!.initContainers = [
    { name: "side", restartPolicy: "Always", ports: [{ containerPort: 2, hostPort: 20 }] },
    { name: "once", ports: [{ containerPort: 3, hostPort: 30 }] },
  ];
  assert.deepEqual(hostPorts(p).map((x) => x.port), [20, 10]);
});

Deno.test("admission: beyond the node's pod capacity is OutOfpods", () => {
  const pods = [
    pod("a", { started: true }),
    pod("b", { created: "2026-01-01T00:00:01Z" }),
    pod("c", { created: "2026-01-01T00:00:02Z" }),
  ];
  assert.deepEqual(rejections(pods, { pods: "2" }), {
    "uid-c": {
      reason: "OutOfpods",
      message: "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2",
    },
  });
  assert.deepEqual(rejections(pods, { pods: "3" }), {});
  assert.deepEqual(rejections(pods, { pods: "0" }), {}, "no capacity reported: not checked");
  assert.deepEqual(rejections(pods), {});
});

Deno.test("admission: cpu and memory requests beyond allocatable are OutOfcpu / OutOfmemory", () => {
  const alloc = { cpu: "2", memory: "1Gi", pods: "110" };
  const big = pod("big", { started: true, requests: { cpu: "1500m", memory: "512Mi" } });
  const cpu = pod("cpu", { requests: { cpu: "600m" } });
  assert.deepEqual(rejections([big, cpu], alloc), {
    "uid-cpu": {
      reason: "OutOfcpu",
      message: "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000",
    },
  });
  const mem = pod("mem", { requests: { cpu: "100m", memory: "600Mi" } });
  assert.deepEqual(rejections([big, mem], alloc), {
    "uid-mem": {
      reason: "OutOfmemory",
      message: `Node didn't have enough resource: memory, requested: ${600 * 2 ** 20}, used: ${
        512 * 2 ** 20
      }, capacity: ${2 ** 30}`,
    },
  });
  // Resources come before ports, as the kubelet reports the first failure.
  const both = pod("both", {
    requests: { cpu: "1" },
    ports: [{ containerPort: 1, hostPort: 5 }],
  });
  const holder = pod("holder", { started: true, ports: [{ containerPort: 1, hostPort: 5 }] });
  assert.equal(rejections([big, holder, both], alloc)["uid-both"]?.reason, "OutOfcpu");
  // No requests: only the pod count and ports are checked.
  assert.deepEqual(rejections([big, pod("free")], { cpu: "1", memory: "1", pods: "10" }), {});
});

Deno.test("admission: pod requests as the scheduler counts them", () => {
  const p = pod("p", { requests: { cpu: "100m", memory: "100" } });
  p.spec!.containers.push({ name: "d", resources: { requests: { cpu: "200m" } } });
  assert.deepEqual(podRequests(p), { cpu: 300, memory: 100 });
  p.spec!.initContainers = [{ name: "init", resources: { requests: { cpu: "1", memory: "50" } } }];
  assert.deepEqual(podRequests(p), { cpu: 1000, memory: 100 }, "the larger of init and sum");
  p.spec!.initContainers.unshift({
    name: "side",
    restartPolicy: "Always",
    resources: { requests: { cpu: "50m", memory: "10" } },
  });
  assert.deepEqual(podRequests(p), { cpu: 1050, memory: 110 }, "sidecars add to both");
  p.spec!.overhead = { cpu: "10m" };
  assert.deepEqual(podRequests(p), { cpu: 1060, memory: 110 });
  p.spec!.resources = { requests: { cpu: "2" } };
  assert.deepEqual(podRequests(p), { cpu: 2010, memory: 110 }, "pod-level requests win");
  assert.deepEqual(podRequests(pod("x", { requests: { cpu: "0.0001" } })), { cpu: 1, memory: 0 });
});
