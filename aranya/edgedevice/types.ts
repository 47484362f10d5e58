/** The EdgeDevice custom resource as aranya reads it (see deploy/crds). */
import type { KubernetesObject, V1ObjectMeta, V1OwnerReference } from "@kubernetes/client-node";
import type { LabelSelector } from "../kube/label_selector.ts";

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
/**
 * Annotation on every Node aranya creates: the uid of the EdgeDevice it was
 * created for. A Node without it, or with another uid, is not that device's
 * Node and is never changed or deleted for it (labels can be set by anyone who
 * can write Nodes; the uid of an object aranya created cannot be guessed
 * before the object exists).
 */
export const ANNOTATION_OWNER_UID = "aranya.arhat.dev/edge-device-uid";
/** Annotation on an edge Node: the uid of its device's virtual pod (written by aranya only). */
export const ANNOTATION_VIRTUAL_POD_UID = "aranya.arhat.dev/virtual-pod-uid";

/** The part of an EdgeDevice aranya uses. */
export interface EdgeDevice extends KubernetesObject {
  spec?: {
    connectivity?: {
      method?: "websocket" | "grpc" | "mqtt";
      /** Durations such as "10s" overriding aranya's defaults for this device (device_timers.ts). */
      timers?: {
        unarySessionTimeout?: string;
        heartbeatInterval?: string;
        leaseDuration?: string;
        forceNodeStatusSyncInterval?: string;
        /** websocket and grpc only (the CRD refuses it with mqtt). */
        keepaliveInterval?: string;
      };
      /** Only with method "mqtt" (the CRD refuses it otherwise). */
      mqttConfig?: {
        /** Topic prefix: the device's topics are {messageNamespace}/{cmd,msg,status}. */
        messageNamespace?: string;
      };
    };
    node?: {
      labels?: Record<string, string>;
      annotations?: Record<string, string>;
      taints?: { key: string; value?: string; effect: string }[];
      /**
       * The taint arhat.dev/namespace=<namespace>:NoSchedule on the Node
       * (default true). false: pods that do not tolerate it may be scheduled
       * there (a cluster admin's opt-in, guarded by admission).
       */
      namespaceTaint?: boolean;
    };
    pod?: {
      allocatable?: number;
      /**
       * Namespaces besides the EdgeDevice's own whose pods the device may run
       * (empty by default; a cluster admin's opt-in, guarded by admission).
       */
      allowedNamespaces?: string[];
      /**
       * Namespaces whose labels match this selector may run pods on the device
       * too (an empty selector matches every namespace; a cluster admin's
       * opt-in, guarded by admission).
       */
      allowedNamespaceSelector?: LabelSelector;
      /** What dnsPolicy ClusterFirst means for pods on this device. */
      dns?: { servers?: string[]; searches?: string[]; options?: string[] };
    };
  };
  status?: EdgeDeviceStatus;
}

/** Phase shown in `kubectl get ed` (column STATUS). */
export type EdgeDevicePhase = "Pending" | "Connected" | "Disconnected";

/** The EdgeDevice's status (written through the status subresource). */
export interface EdgeDeviceStatus {
  phase?: EdgeDevicePhase;
  /** Name of the device's Node. */
  node?: string;
  /** RFC 3339: set on connect, on disconnect and on each periodic status sync. */
  lastSeen?: string;
  /** The agent, as the device reported it when it connected. */
  agent?: AgentInfo;
  conditions?: EdgeDeviceCondition[];
  /** The virtual pod aranya created for the device (matched by uid, never by a label). */
  virtualPod?: { name?: string; uid?: string };
}

/** The device's agent. */
export interface AgentInfo {
  version?: string;
  os?: string;
  arch?: string;
  /** "<runtime name>://<version>", as in the Node's containerRuntimeVersion. */
  runtime?: string;
}

/** Condition types of an EdgeDevice. */
export const CONDITION_CONNECTED = "Connected";
export const CONDITION_NODE_READY = "NodeReady";
/**
 * False while the device's Node name is taken by a Node aranya did not create
 * for this EdgeDevice (another namespace's device, a real node): nothing is
 * provisioned then.
 */
export const CONDITION_NODE_OWNED = "NodeOwned";
/** Reason of NodeOwned=False. */
export const REASON_NODE_NAME_TAKEN = "NodeNameTaken";

/** One condition of an EdgeDevice. */
export interface EdgeDeviceCondition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason?: string;
  message?: string;
  observedGeneration?: number;
  /** RFC 3339; changes only when `status` changes. */
  lastTransitionTime?: string;
}

/** The virtual pod's only container: the device host. */
export const VIRTUAL_CONTAINER = "host";
/** Image name of the virtual pod's container (never pulled: no kubelet runs it). */
export const VIRTUAL_IMAGE = "virtualpod.aranya.arhat.dev/host:device";
/** Image ID reported in the virtual container's status. */
export const VIRTUAL_IMAGE_ID = `aranya://${VIRTUAL_IMAGE}`;

/** Name of the Secret holding a device's credentials. */
export function credentialsSecretName(device: string): string {
  return `${device}-arhat-credentials`;
}

/** Reason of the conditions that go False when the device's link is lost. */
export const REASON_DISCONNECTED = "EdgeDeviceDisconnected";

/** A controller owner reference to EdgeDevice `name` with `uid`. */
export function ownerRef(name: string, uid: string): V1OwnerReference {
  return { apiVersion: API_VERSION, kind: KIND, name, uid, controller: true };
}

/** True when `meta` has a controller owner reference to the EdgeDevice with `uid`. */
export function ownedBy(meta: V1ObjectMeta | undefined, uid: string): boolean {
  return (meta?.ownerReferences ?? []).some((r) =>
    r.controller === true && r.kind === KIND && r.apiVersion === API_VERSION && r.uid === uid
  );
}
