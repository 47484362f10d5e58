/**
 * The end-to-end environment: a real local Kubernetes control plane built from
 * upstream sources, real container engines, a real MQTT broker and a real image
 * registry, started and stopped by the project's own scripts.
 */
export * from "./fixtures.ts";
export { binPath, ensureBuilt, pinnedVersion } from "./cluster/build.ts";
export { type ControlPlane, startControlPlane, stopControlPlane } from "./cluster/control_plane.ts";
export * from "./services/mod.ts";
export { CACHE, ROOT } from "./paths.ts";
