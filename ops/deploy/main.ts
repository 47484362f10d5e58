/**
 * `deno task deploy -i inventory.yaml [--dry-run] [--kubeconfig FILE] [--device NAME]...`
 *
 * 1. Applies aranya's manifests (deploy/) with server-side apply (unless `aranya.install: false`)
 *    and waits for the EdgeDevice CRD to be served.
 * 2. For every device of the inventory, a few at a time: applies its EdgeDevice, waits for aranya
 *    to issue its credentials, copies arhat (compiled binary or launcher), its config, token, CA
 *    and systemd unit over SSH, (re)starts arhat when something changed, and waits for the Node to
 *    be Ready. Progress is printed per device; one device's failure does not stop the others.
 * 3. Prints a summary; exits 0 when every device succeeded, 1 when one failed, 2 on bad usage or
 *    an invalid inventory.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { CoreV1Api, KubeConfig, KubernetesObjectApi } from "@kubernetes/client-node";
import { ConfigError } from "@aranya/common/config_reader";
import { processEnv } from "@aranya/common/env_expand";
import { errorMessage } from "@aranya/common/errors";
import { ArtifactStore } from "./artifacts.ts";
import { type DeployContext, deployDevice, type DeviceResult } from "./device_deployer.ts";
import { type Inventory, readInventory } from "./inventory.ts";
import { applyObject, aranyaObjects, waitCrdEstablished } from "./manifests.ts";
import { connectSsh } from "./ssh_remote_host.ts";

const USAGE = "Usage: deno task deploy -i inventory.yaml [--dry-run] [--kubeconfig FILE] " +
  "[--device NAME]...";

/** Runs the deploy; resolves with the process exit code. */
export async function main(args: string[], signal: AbortSignal): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      args,
      options: {
        inventory: { type: "string", short: "i" },
        "dry-run": { type: "boolean", default: false },
        kubeconfig: { type: "string" },
        device: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    console.error(`${errorMessage(err)}\n${USAGE}`);
    return 2;
  }
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (!flags.inventory) {
    console.error(`The inventory file is required (-i).\n${USAGE}`);
    return 2;
  }
  let inv: Inventory;
  try {
    inv = await readInventory(flags.inventory, { env: processEnv });
  } catch (err) {
    console.error(errorMessage(err));
    return err instanceof ConfigError ? 2 : 1;
  }
  if (flags.device?.length) {
    const unknown = flags.device.filter((n) => !inv.devices.some((d) => d.name === n));
    if (unknown.length > 0) {
      console.error(`No device ${unknown.map((n) => `"${n}"`).join(", ")} in "${inv.file}"`);
      return 2;
    }
    inv.devices = inv.devices.filter((d) => flags.device!.includes(d.name));
  }
  const dryRun = flags["dry-run"];
  const say = (line: string) => console.log(line);
  if (dryRun) say("dry run: nothing is changed; the API server validates every object");

  // The deploy tool talks to the API server through client-node (its server-side apply of
  // deploy/'s objects); aranya itself does not load client-node (aranya/kube/kube_http.ts).
  const kc = new KubeConfig();
  const file = flags.kubeconfig ?? inv.kubeconfig;
  try {
    if (file) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (err) {
    console.error(`Cannot load kubeconfig${file ? ` "${file}"` : ""}: ${errorMessage(err)}`);
    return 2;
  }
  if (!kc.getCurrentCluster()) {
    console.error("The kubeconfig has no current context with a cluster");
    return 2;
  }
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const core = kc.makeApiClient(CoreV1Api);

  if (inv.aranya.install) {
    say(`aranya: applying deploy/ to ${kc.getCurrentCluster()?.server ?? "the cluster"}`);
    try {
      const list = await aranyaObjects({
        ...(inv.aranya.image ? { image: inv.aranya.image } : {}),
        ...(inv.aranya.tls ? { tls: inv.aranya.tls } : {}),
      });
      for (const o of list) {
        const r = await applyObject(objects, o, { dryRun });
        const would = dryRun && r.action !== "unchanged" ? "would be " : "";
        say(`  ${r.ref} ${would}${r.action}`);
        if (o.kind === "CustomResourceDefinition" && !dryRun) {
          await waitCrdEstablished(objects, o.metadata!.name!);
        }
      }
    } catch (err) {
      console.error(`aranya: ${errorMessage(err)}`);
      return 1;
    }
  }

  // The devices' namespaces, so their EdgeDevices have somewhere to go.
  for (const ns of new Set(inv.devices.map((d) => d.namespace))) {
    try {
      const r = await applyObject(objects, {
        apiVersion: "v1",
        kind: "Namespace",
        metadata: { name: ns },
      }, { dryRun });
      if (r.action !== "unchanged") say(`Namespace ${ns} ${dryRun ? "would be " : ""}${r.action}`);
    } catch (err) {
      console.error(errorMessage(err));
      return 1;
    }
  }

  const ctx: DeployContext = {
    inventory: inv,
    core,
    objects,
    artifacts: new ArtifactStore(inv.artifacts),
    connect: (d, s) =>
      connectSsh({
        host: d.host,
        port: d.port,
        user: d.user,
        privateKeyFile: d.keyFile,
        knownHostsFile: d.knownHostsFile,
        ...(d.hostKey ? { hostKey: d.hostKey } : {}),
      }, s),
    dryRun,
    signal,
  };
  const results = await mapLimit(inv.devices, inv.parallel, (d) => {
    say(`[${d.key}] deploying to ${d.user}@${d.host}:${d.port} (${d.arch}, ${d.connectivity})`);
    return deployDevice(ctx, d, (line) => say(`[${d.key}] ${line}`));
  });
  printSummary(results, say);
  return results.every((r) => r.ok) ? 0 : 1;
}

function printSummary(results: DeviceResult[], say: (line: string) => void): void {
  const ok = results.filter((r) => r.ok).length;
  say("");
  say(`summary: ${ok} of ${results.length} device(s) deployed`);
  const width = Math.max(6, ...results.map((r) => r.key.length));
  for (const r of results) {
    say(`  ${r.key.padEnd(width)}  ${r.ok ? "ok    " : "FAILED"}  ${r.summary.split("\n")[0]}`);
  }
}

/** Runs `fn` over `items` with at most `limit` at once; results in input order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

if (import.meta.main) {
  const ac = new AbortController();
  Deno.addSignalListener("SIGINT", () => ac.abort(new Error("interrupted")));
  Deno.exit(await main(Deno.args, ac.signal));
}
