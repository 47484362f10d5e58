/**
 * aranya, the operator: turns each EdgeDevice into a Kubernetes Node and
 * serves the kubelet API for all of them. The EdgeDevice CRD it owns lives in
 * `deploy/crds/`. Controllers arrive with later work; nothing is exported yet.
 *
 * @module
 */
export {};
