/**
 * Which namespaces' pods a device may run: its EdgeDevice's own namespace,
 * the namespaces `spec.pod.allowedNamespaces` lists, and the namespaces whose
 * labels match `spec.pod.allowedNamespaceSelector`. Namespace labels can only
 * be changed by whoever may update Namespaces (cluster-scoped objects a
 * tenant's namespace rights do not reach), so the selector gives tenants no
 * way in. Pure: the caller passes the Namespace's labels from its cache.
 *
 * @module
 */
import { formatLabelSelector, matchesLabelSelector } from "../kube/label_selector.ts";
import type { EdgeDevice } from "./types.ts";

/** The pod being admitted. */
export interface PodPlace {
  namespace: string;
  name: string;
  node: string;
}

/**
 * Undefined when `owner`'s device may run `pod`; otherwise the refusal
 * message naming the rule. `namespaceLabels` are the labels of the pod's
 * Namespace (undefined: not known, which matches only an empty selector).
 */
export function namespaceRefusal(
  owner: EdgeDevice,
  pod: PodPlace,
  namespaceLabels: Record<string, string> | undefined,
): string | undefined {
  const own = owner.metadata?.namespace ?? "";
  const allowed = owner.spec?.pod?.allowedNamespaces ?? [];
  const selector = owner.spec?.pod?.allowedNamespaceSelector;
  const ns = pod.namespace;
  if (ns === own || allowed.includes(ns)) return undefined;
  if (selector && matchesLabelSelector(selector, namespaceLabels)) return undefined;
  const device = `${own}/${owner.metadata?.name}`;
  const others = [
    ...(allowed.length ? [`of ${allowed.map((a) => `"${a}"`).join(", ")}`] : []),
    ...(selector ? [`of namespaces labelled "${formatLabelSelector(selector)}"`] : []),
  ];
  const fields = [
    "spec.pod.allowedNamespaces",
    ...(selector ? ["spec.pod.allowedNamespaceSelector"] : []),
  ];
  return `Pod "${ns}/${pod.name}" may not run on node "${pod.node}": EdgeDevice "${device}" runs pods of namespace "${own}"${
    others.length ? ` and ${others.join(" and ")}` : " only"
  } (${fields.join(", ")})`;
}

/** What of `ed` decides tenancy, as a string that changes when the rule does. */
export function tenancyKey(ed: EdgeDevice | undefined): string {
  return JSON.stringify([
    ed?.metadata?.uid,
    ed?.spec?.pod?.allowedNamespaces ?? [],
    ed?.spec?.pod?.allowedNamespaceSelector ?? null,
  ]);
}
