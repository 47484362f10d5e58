/**
 * Labels arhat puts on every container it creates, so that the pod list can
 * be rebuilt from the runtime alone (after a restart or reboot, offline).
 */

export const LABEL_POD_UID = "arhat.dev/pod-uid";
export const LABEL_POD_NAMESPACE = "arhat.dev/pod-namespace";
export const LABEL_POD_NAME = "arhat.dev/pod-name";
export const LABEL_CONTAINER = "arhat.dev/container-name";
/** "infra", "init", "app" or "ephemeral". */
export const LABEL_ROLE = "arhat.dev/role";
export const LABEL_SPEC_HASH = "arhat.dev/spec-hash";
/** How many times this container was restarted before this instance. */
export const LABEL_RESTART_COUNT = "arhat.dev/restart-count";
/** Marks containers owned by arhat. */
export const LABEL_MANAGED = "arhat.dev/managed";

/** Role of a container in a pod. */
export type ContainerRole = "infra" | "init" | "app" | "ephemeral";

/** Name of the infra container that holds a pod's namespaces. */
export const INFRA_CONTAINER = "POD";

/** Engine-level container name: unique per pod, container and restart. */
export function containerName(
  pod: { namespace: string; name: string; uid: string },
  container: string,
  restart: number,
): string {
  const uid = pod.uid.replaceAll("-", "").slice(0, 12);
  return `k8s_${container}_${pod.name}_${pod.namespace}_${uid}_${restart}`;
}
