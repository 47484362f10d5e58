/**
 * aranya's manifests (deploy/) and their server-side apply through client-node.
 *
 * Objects are applied in dependency order (namespace, CRD, RBAC, admission policies, config,
 * Deployment, Service) with
 * field manager "aranya-deploy" and `force`, as `kubectl apply --server-side --force-conflicts`
 * would. Each result says what happened, as kubectl prints it: created, configured or unchanged.
 * A dry run asks the API server to validate and merge without storing (`dryRun=All`) and compares
 * the merged object with the stored one.
 *
 * @module
 */
import {
  type KubernetesObject,
  type KubernetesObjectApi,
  PatchStrategy,
} from "@kubernetes/client-node";
import { Buffer } from "node:buffer";
import { parseAllDocuments } from "yaml";
import { InvalidInputError, TimeoutError } from "@aranya/common/errors";
import { stableJson } from "@aranya/common/stable_json";
import { fromApiError, isNotFound } from "@aranya/aranya/kube/errors";
import { PROJECT_ROOT } from "../build/bundle.ts";

/** The field manager of every object the deployer applies. */
export const FIELD_MANAGER = "aranya-deploy";

/** aranya's manifest files, in the order they are applied. */
export const ARANYA_MANIFESTS = [
  "deploy/aranya/namespace.yaml",
  "deploy/crds/aranya.arhat.dev_edgedevices.yaml",
  "deploy/aranya/rbac.yaml",
  "deploy/aranya/admission.yaml",
  "deploy/aranya/deployment.yaml",
  "deploy/aranya/service.yaml",
] as const;

/** "Kind namespace/name", for messages. */
export function refOf(o: KubernetesObject): string {
  const ns = o.metadata?.namespace ? `${o.metadata.namespace}/` : "";
  return `${o.kind} ${ns}${o.metadata?.name}`;
}

/** Reads the objects of a manifest file (empty documents skipped). */
export async function readManifest(file: string): Promise<KubernetesObject[]> {
  const text = await Deno.readTextFile(file);
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) throw new InvalidInputError(`"${file}" is not YAML`);
  const out: KubernetesObject[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      throw new InvalidInputError(`"${file}": ${doc.errors[0]!.message}`);
    }
    const o = doc.toJS() as KubernetesObject | null;
    if (o && typeof o === "object") out.push(o);
  }
  return out;
}

/** Options of {@link aranyaObjects}. */
export interface AranyaObjectsOptions {
  /** Overrides the aranya container's image. */
  image?: string;
  /** PEM files of the device-link serving certificate: adds Secret aranya-system/aranya-tls. */
  tls?: { certFile: string; keyFile: string };
  root?: string;
}

/** aranya's objects from deploy/, in apply order, with the inventory's image and TLS Secret. */
export async function aranyaObjects(o: AranyaObjectsOptions = {}): Promise<KubernetesObject[]> {
  const root = o.root ?? PROJECT_ROOT;
  const objects: KubernetesObject[] = [];
  for (const f of ARANYA_MANIFESTS) objects.push(...await readManifest(`${root}/${f}`));
  if (o.image) {
    const dep = objects.find((x) => x.kind === "Deployment" && x.metadata?.name === "aranya") as
      | { spec: { template: { spec: { containers: { name: string; image: string }[] } } } }
      | undefined;
    const c = dep?.spec.template.spec.containers.find((x) => x.name === "aranya");
    if (!c) throw new InvalidInputError('deploy/aranya/deployment.yaml has no "aranya" container');
    c.image = o.image;
  }
  if (o.tls) {
    const secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: "kubernetes.io/tls",
      metadata: { name: "aranya-tls", namespace: "aranya-system" },
      data: {
        "tls.crt": Buffer.from(await Deno.readFile(o.tls.certFile)).toString("base64"),
        "tls.key": Buffer.from(await Deno.readFile(o.tls.keyFile)).toString("base64"),
      },
    };
    // Before the Deployment, which mounts it.
    const at = objects.findIndex((x) => x.kind === "Deployment");
    objects.splice(at < 0 ? objects.length : at, 0, secret);
  }
  return objects;
}

/** What applying one object did (or would do, in a dry run). */
export type ApplyAction = "created" | "configured" | "unchanged";

/** Result of {@link applyObject}. */
export interface ApplyResult {
  ref: string;
  action: ApplyAction;
  /** The object as stored (or as it would be). */
  object: KubernetesObject;
}

/**
 * Server-side applies `obj`.
 * @throws the mapped domain error of the API failure, naming the object.
 */
export async function applyObject(
  api: KubernetesObjectApi,
  obj: KubernetesObject,
  opts: { dryRun: boolean },
): Promise<ApplyResult> {
  const ref = refOf(obj);
  let before: KubernetesObject | undefined;
  try {
    before = await api.read({
      apiVersion: obj.apiVersion!,
      kind: obj.kind!,
      metadata: { name: obj.metadata!.name!, namespace: obj.metadata?.namespace ?? "" },
    });
  } catch (err) {
    if (!isNotFound(err)) throw fromApiError(`Reading ${ref}`, err);
  }
  let after: KubernetesObject;
  try {
    after = await api.patch(
      obj,
      undefined,
      opts.dryRun ? "All" : undefined,
      FIELD_MANAGER,
      true,
      PatchStrategy.ServerSideApply,
    );
  } catch (err) {
    throw fromApiError(`Applying ${ref}`, err);
  }
  let action: ApplyAction;
  if (!before) action = "created";
  else if (opts.dryRun) action = sameContent(before, after) ? "unchanged" : "configured";
  else {
    action = before.metadata?.resourceVersion === after.metadata?.resourceVersion
      ? "unchanged"
      : "configured";
  }
  return { ref, action, object: after };
}

/** Equal apart from bookkeeping metadata (what a dry run changes by itself). */
function sameContent(a: KubernetesObject, b: KubernetesObject): boolean {
  const strip = (o: KubernetesObject) => {
    const { metadata, ...rest } = o as KubernetesObject & { status?: unknown };
    const { managedFields: _m, resourceVersion: _r, generation: _g, ...meta } = metadata ?? {};
    return stableJson({ ...rest, metadata: meta });
  };
  return strip(a) === strip(b);
}

/**
 * Waits until the CRD named `name` is Established (its API is served), polling every 500 ms.
 * @throws TimeoutError after `timeoutMs`.
 */
export async function waitCrdEstablished(
  api: KubernetesObjectApi,
  name: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const crd = await api.read({
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name },
    }) as { status?: { conditions?: { type: string; status: string }[] } };
    if (crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) {
      return;
    }
    if (Date.now() > deadline) {
      throw new TimeoutError(
        `CustomResourceDefinition "${name}" was not Established within ${timeoutMs / 1000} s`,
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
