/**
 * Deploys arhat onto one device: its EdgeDevice, its credentials, its files over SSH, its service,
 * then waits for its Node to turn Ready.
 *
 * Idempotent: each file is compared by SHA-256 with what the device has and copied only when it
 * differs; arhat is restarted only when one of its files changed (or it is not running); the
 * EdgeDevice is server-side applied, which stores nothing when nothing changed. A dry run does
 * every read (API server, SSH, hashes) and no write.
 *
 * Files go to a private staging folder first (the SSH user's mktemp) and are then put in place
 * with `install`, through `sudo -n` when the SSH user is not root; a file is never half-written
 * where arhat reads it.
 *
 * @module
 */
import type { CoreV1Api, KubernetesObjectApi } from "@kubernetes/client-node";
import { sleep } from "@aranya/common/backoff";
import { sha256Hex } from "@aranya/common/digest";
import { errorMessage, TimeoutError } from "@aranya/common/errors";
import { credentialsSecretName } from "@aranya/aranya/edgedevice/types";
import { fromApiError, isNotFound } from "@aranya/aranya/kube/errors";
import { arhatConfigYaml, DEVICE_PATHS, edgeDeviceObject } from "./arhat_config.ts";
import type { ArtifactStore, HashedFile } from "./artifacts.ts";
import type { DeviceEntry, Inventory } from "./inventory.ts";
import { type ApplyAction, applyObject } from "./manifests.ts";
import {
  arhatLogTail,
  enableArhat,
  installFiles,
  isArhatRunning,
  type Probe,
  probeHost,
  remoteHashes,
  startArhat,
  type WantedFile,
} from "./device_host.ts";
import type { RemoteHost } from "./remote_host.ts";
import { systemdUnit } from "./systemd_unit.ts";
import { PODMAN_DROP_IN, podmanDropIn, usesPodman } from "./podman_config.ts";
import { decodeBase64Text } from "@aranya/common/base64";

/** Opens the SSH connection to a device. */
export type Connect = (d: DeviceEntry, signal: AbortSignal) => Promise<RemoteHost>;

/** Shared by all devices of a run. */
export interface DeployContext {
  inventory: Inventory;
  core: CoreV1Api;
  objects: KubernetesObjectApi;
  artifacts: ArtifactStore;
  connect: Connect;
  dryRun: boolean;
  signal: AbortSignal;
}

/** What happened to one device. */
export interface DeviceResult {
  key: string;
  ok: boolean;
  /** One-line summary: what changed, or why it failed. */
  summary: string;
  /** Files copied (or that would be). */
  copied: string[];
  restarted: boolean;
  edgeDevice?: ApplyAction;
}

/**
 * Deploys one device; never throws (a failure is reported in the result), so one device's
 * failure does not stop the others.
 */
export async function deployDevice(
  ctx: DeployContext,
  d: DeviceEntry,
  say: (line: string) => void,
): Promise<DeviceResult> {
  const result: DeviceResult = { key: d.key, ok: false, summary: "", copied: [], restarted: false };
  let host: RemoteHost | undefined;
  try {
    const dry = ctx.dryRun;
    const ed = await applyObject(ctx.objects, edgeDeviceObject(d), {
      dryRun: dry,
    });
    result.edgeDevice = ed.action;
    say(`EdgeDevice ${dry && ed.action !== "unchanged" ? "would be " : ""}${ed.action}`);

    const token = await deviceToken(ctx, d, say);

    say(`connecting to ${d.user}@${d.host}:${d.port}`);
    host = await ctx.connect(d, ctx.signal);
    const probe = await probeHost(host, d);
    say(`connected: ${probe.arch}, ${probe.init === "systemd" ? "systemd" : "no systemd"}`);

    const artifact = await ctx.artifacts.forArch(d.arch);
    const wanted = await wantedFiles(ctx, d, artifact.files, token, probe.init);
    const have = await remoteHashes(host, probe.sudo, wanted.map((w) => w.remote));
    const changed = wanted.filter((w) => have.get(w.remote) !== w.sha256);
    const running = await isArhatRunning(host, probe);
    result.copied = changed.map((w) => w.remote);
    const restart = changed.length > 0 || !running;

    if (dry) {
      say(
        changed.length === 0
          ? `files: all ${wanted.length} up to date (${artifact.kind})`
          : `files: would copy ${changed.map((w) => w.remote).join(", ")}`,
      );
      if (token === undefined) say("config: the device token is not issued yet");
      if (restart) say(`arhat: would ${running ? "restart" : "start"} (${probe.init})`);
      result.restarted = restart;
      result.ok = true;
      result.summary = changed.length === 0 && !restart && ed.action === "unchanged"
        ? "nothing to do"
        : `would copy ${changed.length} file(s)${restart ? ", (re)start arhat" : ""}`;
      return result;
    }

    if (changed.length > 0) {
      const t0 = performance.now();
      await installFiles(host, probe.sudo, changed);
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      say(`files: copied ${changed.map((w) => w.remote).join(", ")} (${secs} s, ${artifact.kind})`);
    } else {
      say(`files: all ${wanted.length} up to date (${artifact.kind})`);
    }
    const unitChanged = changed.some((w) => w.remote === DEVICE_PATHS.unit);
    if (restart) {
      await startArhat(host, probe, { restart: running, unitChanged });
      say(`arhat: ${running ? "restarted" : "started"} (${probe.init})`);
      result.restarted = true;
    } else {
      await enableArhat(host, probe);
      say("arhat: running, unchanged");
    }

    const t0 = performance.now();
    await waitNodeReady(ctx, d, host, probe);
    say(`Node "${d.name}" Ready (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    result.ok = true;
    result.summary = changed.length === 0 && !restart && ed.action === "unchanged"
      ? "unchanged"
      : `copied ${changed.length} file(s)${restart ? ", arhat (re)started" : ""}`;
    return result;
  } catch (err) {
    result.summary = errorMessage(err);
    say(`FAILED: ${result.summary}`);
    return result;
  } finally {
    await host?.close().catch(() => {});
  }
}

/** The device token from the credentials Secret; undefined in a dry run before aranya made it. */
async function deviceToken(
  ctx: DeployContext,
  d: DeviceEntry,
  say: (line: string) => void,
): Promise<string | undefined> {
  const name = credentialsSecretName(d.name);
  const deadline = Date.now() + ctx.inventory.credentialsTimeoutMs;
  let said = false;
  while (true) {
    try {
      const s = await ctx.core.readNamespacedSecret({ name, namespace: d.namespace });
      const b64 = s.data?.token;
      if (b64) return decodeBase64Text(b64, `The token of Secret "${d.namespace}/${name}"`);
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Secret "${d.namespace}/${name}"`, err);
    }
    if (ctx.dryRun) return undefined;
    if (Date.now() > deadline) {
      throw new TimeoutError(
        `aranya did not create the credentials Secret "${d.namespace}/${name}" within ` +
          `${ctx.inventory.credentialsTimeoutMs / 1000} s; is aranya running and watching ` +
          `namespace "${d.namespace}"?`,
      );
    }
    if (!said) say(`waiting for aranya to issue the device's credentials (Secret "${name}")`);
    said = true;
    await sleep(1000, ctx.signal);
  }
}

async function wantedFiles(
  ctx: DeployContext,
  d: DeviceEntry,
  program: HashedFile[],
  token: string | undefined,
  init: Probe["init"],
): Promise<WantedFile[]> {
  const enc = new TextEncoder();
  const out: WantedFile[] = [...program];
  const mem = (remote: string, mode: number, data: Uint8Array) =>
    out.push({ remote, mode, data, sha256: sha256Hex(data) });
  const caFile = ctx.inventory.links[d.connectivity]?.caFile;
  if (caFile) mem(DEVICE_PATHS.ca, 0o644, await Deno.readFile(caFile));
  // Without a token yet (dry run only) the token file is left out of the plan.
  if (token !== undefined) mem(DEVICE_PATHS.token, 0o600, enc.encode(token));
  const config = arhatConfigYaml({ device: d, links: ctx.inventory.links, withCa: !!caFile });
  mem(DEVICE_PATHS.config, 0o600, enc.encode(config));
  if (init === "systemd") mem(DEVICE_PATHS.unit, 0o644, enc.encode(await systemdUnit()));
  if (usesPodman(d.runtimeEndpoint)) mem(PODMAN_DROP_IN, 0o644, enc.encode(podmanDropIn()));
  return out;
}

async function waitNodeReady(
  ctx: DeployContext,
  d: DeviceEntry,
  host: RemoteHost,
  p: Probe,
): Promise<void> {
  const deadline = Date.now() + ctx.inventory.nodeReadyTimeoutMs;
  let last = "not found";
  while (Date.now() < deadline) {
    try {
      const node = await ctx.core.readNode({ name: d.name });
      const ready = node.status?.conditions?.find((c) => c.type === "Ready");
      if (ready?.status === "True") return;
      last = ready
        ? `Ready=${ready.status} (${ready.reason ?? "no reason"})`
        : "no Ready condition";
    } catch (err) {
      if (!isNotFound(err)) throw fromApiError(`Reading Node "${d.name}"`, err);
    }
    await sleep(1000, ctx.signal);
  }
  const tail = await arhatLogTail(host, p);
  throw new TimeoutError(
    `Node "${d.name}" did not turn Ready within ${ctx.inventory.nodeReadyTimeoutMs / 1000} s ` +
      `(last: ${last}); arhat's log on the device ends with:\n${tail || "(empty)"}`,
  );
}
