/**
 * Running pods as the kubelet keeps them, through the real API server, with
 * the pod controller in this process, a recording fake device and a fake
 * clock (so 80% of a token's lifetime passes in a moment):
 *
 * - ConfigMap, Secret, downwardAPI and projected volume contents follow their
 *   sources on the next sync (same spec hash: no restart), and nothing is sent
 *   when nothing changed; the pod's own labels go at once;
 * - the projected service account token is cached (the same token in every
 *   send, one TokenRequest) and requested again at 80% of its lifetime;
 * - activeDeadlineSeconds, set on the running pod: stopped on the device,
 *   Failed with reason DeadlineExceeded;
 * - spec.pod.allowedNamespaceSelector: pods of labelled namespaces run;
 *   unlabelling the namespace, or changing the rule, stops them and refuses
 *   them (NamespaceNotAllowed).
 *
 * e2e/pod_behaviour_e2e_test.ts shows the same with the real aranya process
 * and arhat on Podman.
 */
import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { eventually, uniqueName, useCluster } from "@aranya/e2e/fixtures";
import { sleep } from "@aranya/e2e/process";
import { CmdKind, MsgKind } from "@aranya/common/envelope";
import { createLogger } from "@aranya/common/log";
import type { Reply, SessionClient } from "@aranya/common/session/session_client";
import {
  ContainerStatus_State,
  PodDeleteCmdSchema,
  type PodEnsureCmd,
  PodEnsureCmdSchema,
  PodStatusListMsgSchema,
  PodStatusMsg_Phase,
  PodStatusMsgSchema,
} from "@aranya/proto/gen/aranya/pod_pb";
import type { EdgeDirectory } from "../edgedevice/controller.ts";
import type { EdgeDevice } from "../edgedevice/types.ts";
import { PodController } from "./pod_controller.ts";
import { testClients } from "../kube/testing/test_clients.ts";

const dec = new TextDecoder();

/** A device that records what it is told and answers like arhat. */
class FakeDevice {
  readonly ensures: PodEnsureCmd[] = [];
  readonly deletes: string[] = [];
  constructor(readonly now: () => number) {}

  readonly client = {
    onUnsolicited: (_h: (r: Reply) => void) => {},
    request: (kind: CmdKind, payload: Uint8Array): Promise<Reply> => {
      if (kind === CmdKind.CMD_POD_LIST) {
        return Promise.resolve(this.#reply(toBinary(
          PodStatusListMsgSchema,
          create(PodStatusListMsgSchema, {}),
        )));
      }
      if (kind === CmdKind.CMD_POD_ENSURE) {
        const cmd = fromBinary(PodEnsureCmdSchema, payload);
        this.ensures.push(cmd);
        const at = new Date(this.#started.get(cmd.uid) ?? this.now()).toISOString();
        this.#started.set(cmd.uid, Date.parse(at));
        return Promise.resolve(this.#reply(toBinary(
          PodStatusMsgSchema,
          create(PodStatusMsgSchema, {
            uid: cmd.uid,
            namespace: cmd.namespace,
            name: cmd.name,
            phase: PodStatusMsg_Phase.RUNNING,
            startedAt: at,
            specHash: cmd.specHash,
            containers: cmd.containers.map((c) => ({
              name: c.name,
              state: ContainerStatus_State.RUNNING,
              ready: true,
              containerId: `id-${c.name}`,
              startedAt: at,
            })),
          }),
        )));
      }
      if (kind === CmdKind.CMD_POD_DELETE) {
        const cmd = fromBinary(PodDeleteCmdSchema, payload);
        this.deletes.push(cmd.uid);
        return Promise.resolve(this.#reply(toBinary(
          PodStatusMsgSchema,
          create(PodStatusMsgSchema, { uid: cmd.uid, phase: PodStatusMsg_Phase.DELETED }),
        )));
      }
      return Promise.reject(new Error(`unexpected command ${kind}`));
    },
  };
  readonly #started = new Map<string, number>();

  #reply(payload: Uint8Array): Reply {
    return { kind: MsgKind.MSG_POD_STATUS, payload };
  }

  /** The files of volume `volume` in `cmd`, path -> text. */
  static files(cmd: PodEnsureCmd, volume: string): Record<string, string> {
    const v = cmd.volumes.find((x) => x.name === volume);
    if (v?.source.case !== "data") throw new Error(`no data volume "${volume}"`);
    return Object.fromEntries(v.source.value.files.map((f) => [f.path, dec.decode(f.data)]));
  }

  sentFor(uid: string): PodEnsureCmd[] {
    return this.ensures.filter((c) => c.uid === uid);
  }
}

Deno.test({
  name:
    "running pods: volumes follow their sources, tokens refresh at 80%, deadlines stop pods, namespace selectors admit",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const cluster = await useCluster();
    const kc = testClients(cluster.kubeconfig);
    const core = kc.core;
    const ns = uniqueName("refresh");
    const guestNs = uniqueName("guest");
    const otherNs = uniqueName("guest");
    const lateNs = uniqueName("late");
    const node = uniqueName("fake-dev");
    const label = `aranya-test/${ns}`;
    let clock = Date.now();
    const now = () => clock;
    const device = new FakeDevice(now);
    const ed: EdgeDevice = {
      metadata: { namespace: ns, name: node, uid: crypto.randomUUID() },
      spec: { pod: { allowedNamespaceSelector: { matchLabels: { [label]: "yes" } } } },
      status: { virtualPod: { name: node, uid: "not-this-one" } },
    };
    const directory: EdgeDirectory = {
      device: (key) => key === `${ns}/${node}` ? ed : undefined,
      ownerOf: (n) => n === node ? ed : undefined,
      ownedDevice: (key) => key === `${ns}/${node}` ? ed : undefined,
      virtualPodUid: (n) => n === node ? "not-this-one" : undefined,
    };
    const log: string[] = [];
    // The controller's Namespace list leaves lateNs out (its watch then never hears of it).
    const coreHidingLate = new Proxy(core, {
      get: (target, prop, receiver) =>
        prop === "listNamespace"
          ? async () => {
            const list = await target.listNamespace();
            return { ...list, items: list.items.filter((n) => n.metadata?.name !== lateNs) };
          }
          : Reflect.get(target, prop, receiver),
    });
    const pods = new PodController({
      http: kc.http,
      core: coreHidingLate,
      directory,
      namespaces: [ns, guestNs, otherNs, lateNs],
      kubeletAddress: "127.0.0.1",
      syncIntervalMs: 5_000,
      tickMs: 100,
      now,
      log: createLogger({ level: "debug", sink: (line) => log.push(line) }),
    });
    const ac = new AbortController();
    let running: Promise<void> | undefined;
    const kubectl = (args: string[], stdin?: string) => cluster.kubectlOk(args, stdin);
    const podJson = async (namespace: string, name: string) =>
      JSON.parse(await kubectl(["get", "pod", name, "-n", namespace, "-o", "json"]));
    const apply = (namespace: string, o: unknown) =>
      kubectl(["apply", "-n", namespace, "-f", "-"], JSON.stringify(o));
    const bound = (name: string, extra: Record<string, unknown> = {}) => ({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name, labels: { app: name } },
      spec: {
        nodeName: node,
        terminationGracePeriodSeconds: 1,
        containers: [{ name: "c", image: "busybox", command: ["sleep", "3600"] }],
        ...extra,
      },
    });
    /** Waits for the device to get one more ensure of `uid` than `before`; returns it. */
    const nextEnsure = (what: string, uid: string, before: number) =>
      eventually(what, () => {
        const sent = device.sentFor(uid);
        return Promise.resolve(sent.length > before ? sent[sent.length - 1] : undefined);
      }, 20_000);
    try {
      // The Node exists (the pod garbage collector removes pods bound to missing Nodes); tainted
      // so that nothing else is scheduled there.
      await apply("default", {
        apiVersion: "v1",
        kind: "Node",
        metadata: { name: node },
        spec: { taints: [{ key: "aranya-test/fake", effect: "NoSchedule" }] },
      });
      for (const n of [ns, guestNs, otherNs, lateNs]) await kubectl(["create", "namespace", n]);
      for (const n of [guestNs, otherNs, lateNs]) {
        await kubectl(["label", "namespace", n, `${label}=yes`]);
      }
      for (const n of [ns, guestNs, otherNs, lateNs]) {
        await eventually(
          `the default ServiceAccount of ${n}`,
          async () =>
            (await cluster.kubectl(["get", "sa", "default", "-n", n])).code === 0 || undefined,
        );
      }
      running = pods.run(ac.signal);
      await pods.ready;
      assert.equal(pods.watches, 5, "a pod watch per namespace named, and one Namespace watch");
      pods.attach({
        device: `${ns}/${node}`,
        node,
        client: device.client as unknown as SessionClient,
        closed: new Promise(() => {}),
      });
      pods.deviceChanged(ed); // as aranya/main.ts does after each EdgeDevice reconcile

      await apply(ns, {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "cfg" },
        data: { "app.conf": "v1" },
      });
      await apply(ns, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "creds" },
        stringData: { password: "p1" },
      });
      await apply(
        ns,
        bound("vol", {
          containers: [{
            name: "c",
            image: "busybox",
            command: ["sleep", "3600"],
            env: [{
              name: "CONF",
              valueFrom: { configMapKeyRef: { name: "cfg", key: "app.conf" } },
            }],
            volumeMounts: [
              { name: "cfg", mountPath: "/cfg" },
              { name: "creds", mountPath: "/creds" },
              { name: "info", mountPath: "/info" },
              { name: "bundle", mountPath: "/bundle" },
            ],
          }],
          volumes: [
            { name: "cfg", configMap: { name: "cfg" } },
            { name: "creds", secret: { secretName: "creds" } },
            {
              name: "info",
              downwardAPI: {
                items: [{ path: "labels", fieldRef: { fieldPath: "metadata.labels" } }],
              },
            },
            {
              name: "bundle",
              projected: {
                sources: [
                  { configMap: { name: "cfg", items: [{ key: "app.conf", path: "conf" }] } },
                  { secret: { name: "creds" } },
                  { serviceAccountToken: { path: "token", expirationSeconds: 600 } },
                ],
              },
            },
          ],
        }),
      );
      const pod = await podJson(ns, "vol");
      const uid = pod.metadata.uid;
      const apiAccess = pod.spec.volumes.find((v: { name: string }) =>
        v.name.startsWith("kube-api-access-")
      ).name;

      const first = await nextEnsure("the pod sent to the device", uid, 0);
      let sent = 1;
      assert.deepEqual(FakeDevice.files(first, "cfg"), { "app.conf": "v1" });
      assert.deepEqual(FakeDevice.files(first, "creds"), { password: "p1" });
      assert.equal(FakeDevice.files(first, "info").labels, 'app="vol"');
      const token1 = FakeDevice.files(first, "bundle").token!;
      assert.match(token1, /^ey[\w-]+\.[\w-]+\.[\w-]+$/);
      assert.equal(FakeDevice.files(first, "bundle").conf, "v1");
      const apiToken = FakeDevice.files(first, apiAccess).token!;
      assert.equal(pods.tokensRequested, 2, "the pod's two tokens");
      await eventually("the status from the device", async () =>
        (await podJson(ns, "vol")).status?.phase === "Running" || undefined);

      await t.step("nothing changed: resolved again on schedule, nothing sent", async () => {
        clock += 6_000;
        await sleep(1_500);
        clock += 6_000;
        await sleep(1_500);
        assert.equal(device.sentFor(uid).length, sent, "no ensure without a change");
        assert.equal(pods.tokensRequested, 2, "tokens come from the cache");
        assert.ok(
          log.some((l) =>
            l.includes('"msg":"pod sent to the device"')
          ),
          "the first send is logged",
        );
      });

      await t.step("ConfigMap and Secret changes reach the files, same spec", async () => {
        await apply(ns, {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: "cfg" },
          data: { "app.conf": "v2" },
        });
        await apply(ns, {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: "creds" },
          stringData: { password: "p2" },
        });
        clock += 6_000;
        const cmd = await nextEnsure("the new volume contents sent", uid, sent);
        sent = device.sentFor(uid).length;
        assert.equal(cmd.specHash, first.specHash, "same spec hash: no restart on the device");
        assert.deepEqual(FakeDevice.files(cmd, "cfg"), { "app.conf": "v2" });
        assert.deepEqual(FakeDevice.files(cmd, "creds"), { password: "p2" });
        assert.equal(FakeDevice.files(cmd, "bundle").conf, "v2");
        assert.equal(FakeDevice.files(cmd, "bundle").password, "p2");
        assert.equal(FakeDevice.files(cmd, "bundle").token, token1, "the cached token");
        assert.equal(FakeDevice.files(cmd, apiAccess).token, apiToken);
        assert.equal(pods.tokensRequested, 2);
      });

      await t.step("the pod's own labels reach its downward API files at once", async () => {
        await kubectl(["label", "pod", "vol", "-n", ns, "tier=edge"]);
        const cmd = await nextEnsure("the new labels sent", uid, sent);
        sent = device.sentFor(uid).length;
        assert.equal(FakeDevice.files(cmd, "info").labels, 'app="vol"\ntier="edge"');
        assert.equal(cmd.specHash, first.specHash);
      });

      await t.step("the token is requested again at 80% of its lifetime", async () => {
        clock += 600_000 * 0.8 + 1000;
        const cmd = await nextEnsure("the refreshed token sent", uid, sent);
        sent = device.sentFor(uid).length;
        const token2 = FakeDevice.files(cmd, "bundle").token!;
        assert.match(token2, /^ey[\w-]+\.[\w-]+\.[\w-]+$/);
        assert.notEqual(token2, token1, "a new token");
        assert.equal(FakeDevice.files(cmd, apiAccess).token, apiToken, "3607 s: not due yet");
        assert.equal(pods.tokensRequested, 3, "exactly one new TokenRequest");
        // The new token is one the API server accepts, bound to the pod.
        const review = JSON.parse(
          await kubectl(
            ["create", "-o", "json", "-f", "-"],
            JSON.stringify({
              apiVersion: "authentication.k8s.io/v1",
              kind: "TokenReview",
              spec: { token: token2 },
            }),
          ),
        );
        assert.equal(review.status.authenticated, true);
        assert.equal(review.status.user.extra["authentication.kubernetes.io/pod-uid"][0], uid);
      });

      await t.step("activeDeadlineSeconds set on the running pod stops it", async () => {
        const p = await podJson(ns, "vol");
        const started = Date.parse(p.status.startTime);
        // The deadline is 10 minutes after the start; the fake clock is past 8.
        await kubectl([
          "patch",
          "pod",
          "vol",
          "-n",
          ns,
          "--type=merge",
          "-p",
          JSON.stringify({ spec: { activeDeadlineSeconds: 600 } }),
        ]);
        await sleep(1_500);
        assert.deepEqual(device.deletes, [], "not before the deadline");
        clock = started + 600_000 + 1;
        await eventually("the pod stopped on the device", () =>
          Promise.resolve(device.deletes.includes(uid) || undefined), 20_000);
        const failed = await eventually("phase Failed", async () => {
          const x = await podJson(ns, "vol");
          return x.status.phase === "Failed" ? x : undefined;
        });
        assert.equal(failed.status.reason, "DeadlineExceeded");
        assert.equal(
          failed.status.message,
          "Pod was active on the node longer than the specified deadline",
        );
        assert.ok(failed.status.containerStatuses[0].state.terminated, "container terminated");
        clock += 60_000;
        await sleep(1_500);
        assert.equal(device.sentFor(uid).length, sent, "never sent again");
      });

      await t.step(
        "namespaces matching allowedNamespaceSelector run; unlabelled, refused",
        async () => {
          await apply(guestNs, bound("guest"));
          await apply(otherNs, bound("other"));
          const guest = await podJson(guestNs, "guest");
          const other = await podJson(otherNs, "other");
          await nextEnsure("the guest pod sent", guest.metadata.uid, 0);
          await nextEnsure("the other pod sent", other.metadata.uid, 0);
          // The namespace loses its label: its pod is stopped and refused at once.
          await kubectl(["label", "namespace", guestNs, `${label}-`]);
          const refused = await eventually("the guest refused", async () => {
            const x = await podJson(guestNs, "guest");
            return x.status.phase === "Failed" ? x : undefined;
          });
          assert.equal(refused.status.reason, "NamespaceNotAllowed");
          assert.match(
            refused.status.message,
            new RegExp(
              `of namespaces labelled "${label}=yes" \\(spec\\.pod\\.allowedNamespaces, spec\\.pod\\.allowedNamespaceSelector\\)$`,
            ),
          );
          assert.ok(device.deletes.includes(guest.metadata.uid), "stopped on the device");
          assert.ok(!device.deletes.includes(other.metadata.uid), "the other still runs");
          // The EdgeDevice's rule changes: the pods on its Node are checked again at once.
          ed.spec = { pod: {} };
          pods.deviceChanged(ed);
          const refused2 = await eventually("the other refused", async () => {
            const x = await podJson(otherNs, "other");
            return x.status.phase === "Failed" ? x : undefined;
          });
          assert.match(refused2.status.message, /runs pods of namespace ".*" only/);
          assert.ok(device.deletes.includes(other.metadata.uid));
        },
      );

      await t.step(
        "a namespace the Namespace watch does not know yet: read before refusing",
        async () => {
          ed.spec = { pod: { allowedNamespaceSelector: { matchLabels: { [label]: "yes" } } } };
          pods.deviceChanged(ed);
          // lateNs is labelled, but hidden from the controller's Namespace list (as when the
          // Namespace watch trails the pod watch): a refusal is final, so the API is asked.
          await apply(lateNs, bound("late"));
          const late = await podJson(lateNs, "late");
          await nextEnsure("the late pod sent", late.metadata.uid, 0);
          assert.notEqual((await podJson(lateNs, "late")).status?.phase, "Failed");
        },
      );
    } catch (err) {
      console.error(log.slice(-40).join("\n"));
      throw err;
    } finally {
      ac.abort();
      await running?.catch(() => {});
      for (const n of [ns, guestNs, otherNs, lateNs]) {
        await cluster.kubectl(["delete", "namespace", n, "--ignore-not-found", "--wait=false"]);
      }
      await cluster.kubectl(["delete", "node", node, "--ignore-not-found"]);
      await cluster.release();
    }
  },
});
