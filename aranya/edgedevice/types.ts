/** The EdgeDevice custom resource as aranya reads it (see deploy/crds). */
import type { KubernetesObject } from "@kubernetes/client-node";

export const GROUP = "aranya.arhat.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = "EdgeDevice";
export const PLURAL = "edgedevices";
/** Finalizer that makes deletion wait for aranya's cleanup. */
export const FINALIZER = "aranya.arhat.dev/cleanup";

export const LABEL_ROLE = "arhat.dev/role";
export const LABEL_NAME = "arhat.dev/name";
export const LABEL_NAMESPACE = "arhat.dev/namespace";
export const TAINT_NAMESPACE = "arhat.dev/namespace";

/** The part of an EdgeDevice aranya uses. */
export interface EdgeDevice extends KubernetesObject {
  spec?: {
    connectivity?: { method?: "websocket" | "grpc" | "mqtt" };
    node?: {
      labels?: Record<string, string>;
      annotations?: Record<string, string>;
      taints?: { key: string; value?: string; effect: string }[];
    };
    pod?: { allocatable?: number };
  };
  status?: {
    phase?: "Pending" | "Connected" | "Disconnected";
    node?: string;
    lastSeen?: string;
  };
}

/** The virtual pod's only container: the device host. */
export const VIRTUAL_CONTAINER = "host";
/** Image name of the virtual pod's container (never pulled: no kubelet runs it). */
export const VIRTUAL_IMAGE = "virtualpod.aranya.arhat.dev/host:device";

/** Name of the Secret holding a device's credentials. */
export function credentialsSecretName(device: string): string {
  return `${device}-arhat-credentials`;
}
