/**
 * The device directory's own decisions, with in-memory parts (the sessions it starts need the
 * API and are covered end to end by the e2e tests that run aranya: replicas, tenancy, MQTT).
 */
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { memoryLinkPair } from "@aranya/common/testing/memory_link";
import type { Membership } from "../replicas/membership.ts";
import { MemoryLinkRegistry } from "../connectivity/link_registry.ts";
import type { EdgeDeviceHooks } from "../edgedevice/controller.ts";
import type { EdgeDevice } from "../edgedevice/types.ts";
import { createMetrics } from "../metrics/aranya_metrics.ts";
import { DeviceDirectory, type DeviceDirectoryOptions } from "./device_directory.ts";

function edgeDevice(namespace: string, name: string, mqttNs?: string): EdgeDevice {
  return {
    apiVersion: "aranya.arhat.dev/v1alpha1",
    kind: "EdgeDevice",
    metadata: { namespace, name, uid: `uid-${name}` },
    spec: mqttNs
      ? { connectivity: { method: "mqtt", mqttConfig: { messageNamespace: mqttNs } } }
      : { connectivity: { method: "websocket" } },
  } as EdgeDevice;
}

/** A membership whose health and members the test sets, telling its listeners. */
class TestMembership implements Membership {
  readonly identity = "r0";
  healthy = true;
  others: string[] = [];
  #listeners: (() => void)[] = [];
  readonly ready = Promise.resolve();
  members(): string[] {
    return [this.identity, ...this.others];
  }
  isLive(identity: string): boolean {
    return this.members().includes(identity);
  }
  startedAt(): number | undefined {
    return undefined;
  }
  owns(): boolean {
    return this.others.length === 0;
  }
  onChange(fn: () => void): () => void {
    this.#listeners.push(fn);
    return () => {};
  }
  change(): void {
    for (const fn of this.#listeners) fn();
  }
  run(): Promise<void> {
    return Promise.resolve();
  }
}

function setup(devices: Map<string, EdgeDevice>) {
  const calls: string[] = [];
  let hooks: EdgeDeviceHooks = {};
  const membership = new TestMembership();
  const registry = new MemoryLinkRegistry();
  const opts: DeviceDirectoryOptions = {
    kubeletAddress: "10.0.0.1",
    node: { heartbeatMs: 10_000, leaseDurationMs: 40_000, statusSyncMs: 300_000 },
    clients: {} as DeviceDirectoryOptions["clients"],
    events: { record: () => {} } as unknown as DeviceDirectoryOptions["events"],
    registry,
    authenticator: {
      forget: (key: string) => calls.push(`forget ${key}`),
      prime: (key: string) => calls.push(`prime ${key}`),
    },
    mqtt: {
      addDevice: (key: string, ns: string) => {
        calls.push(`mqtt add ${key} ${ns}`);
        return Promise.resolve();
      },
      removeDevice: (key: string) => calls.push(`mqtt remove ${key}`),
    },
    membership,
    devices: {
      subscribe: (h: EdgeDeviceHooks) => hooks = h,
      ownedDevice: (key: string) => devices.get(key),
      ownerOf: (name: string) => [...devices.values()].find((d) => d.metadata?.name === name),
      device: (key: string) => devices.get(key),
      node: (_name: string): V1Node | undefined => undefined,
      virtualPodUid: () => undefined,
      resync: () => calls.push("resync"),
    },
    pods: {
      attach: () => calls.push("attach"),
      pod: () => undefined,
      deviceChanged: (ed: EdgeDevice) => calls.push(`pods recheck ${ed.metadata?.name}`),
    },
    kubelet: {
      ports: new Map<string, number>(),
      portFor: () => 10250,
      release: (node: string) => calls.push(`release port ${node}`),
    },
    metrics: createMetrics(),
  };
  const directory = new DeviceDirectory(opts);
  return { directory, calls, hooks: () => hooks, membership, registry };
}

Deno.test("a link whose EdgeDevice does not own its Node is closed, naming the device", async () => {
  const { directory } = setup(new Map());
  const ac = new AbortController();
  const run = directory.run(ac.signal);
  const [server] = memoryLinkPair("edge/stranger");
  directory.onLink(server);
  const why = await server.closed;
  assert.match(why.reason, /EdgeDevice "edge\/stranger" does not own/);
  ac.abort();
  await run;
});

Deno.test("a link that arrives while the directory does not run is refused", async () => {
  const { directory } = setup(new Map([["edge/d1", edgeDevice("edge", "d1")]]));
  const [server] = memoryLinkPair("edge/d1");
  directory.onLink(server);
  const why = await server.closed;
  assert.match(why.reason, /not a member now/);
});

Deno.test("an EdgeDevice seen and then deleted: counted, pods rechecked, credentials forgotten, link closed, port freed", async () => {
  const devices = new Map([["edge/d1", edgeDevice("edge", "d1")]]);
  const { hooks, calls, registry } = setup(devices);
  hooks().onDevice?.(devices.get("edge/d1")!);
  assert.deepEqual(calls, ["pods recheck d1", "mqtt remove edge/d1"]);
  const [server] = memoryLinkPair("edge/d1");
  assert.ok(registry.claim(server));
  calls.length = 0;
  devices.delete("edge/d1");
  hooks().onDeviceRemoved?.("edge", "d1");
  assert.deepEqual(calls, ["mqtt remove edge/d1", "forget edge/d1", "release port d1"]);
  const why = await server.closed;
  assert.match(why.reason, /EdgeDevice "edge\/d1" was deleted/);
});

Deno.test("deleting a same-named EdgeDevice of another namespace keeps the owner's port", () => {
  const devices = new Map([["edge/d1", edgeDevice("edge", "d1")]]);
  const { hooks, calls } = setup(devices);
  hooks().onDeviceRemoved?.("other", "d1");
  assert.ok(!calls.includes("release port d1"), calls.join(", "));
  assert.ok(calls.includes("forget other/d1"));
});

Deno.test("MQTT devices follow this replica's share; credentials made here prime the authenticator", () => {
  const devices = new Map([["edge/m1", edgeDevice("edge", "m1", "fleet-a")]]);
  const { hooks, calls, membership } = setup(devices);
  hooks().onDevice?.(devices.get("edge/m1")!);
  assert.ok(calls.includes("mqtt add edge/m1 fleet-a"), calls.join(", "));
  calls.length = 0;
  membership.others = ["r1"]; // the share moved away
  membership.change();
  assert.deepEqual(calls, ["resync", "mqtt remove edge/m1"]);
  hooks().onCredentials?.("edge/m1", "uid-m1", "token");
  assert.ok(calls.includes("prime edge/m1"));
});
