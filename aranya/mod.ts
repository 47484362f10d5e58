/**
 * `@aranya/aranya`: the operator. It turns each EdgeDevice into a Kubernetes
 * Node, serves the kubelet API for all of them and runs their pods through the
 * devices' links; `main.ts` is the program. Its parts are imported by path
 * through this package's exports (`@aranya/aranya/kube/client`); the tests and
 * benches of other packages use them so. The EdgeDevice CRD is in
 * `deploy/crds/`; the architecture is in docs/aranya.md.
 *
 * @module
 */
export {};
