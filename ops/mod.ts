/**
 * Packaging and deployment: compiling aranya and arhat (`build/`), and `deno task deploy`
 * (`deploy/`), which installs aranya into a cluster and arhat onto devices over SSH.
 *
 * @module
 */
export { type ArtifactFile, buildLauncher, launcherScript } from "./build/launcher.ts";
export { arhatConfigYaml, DEVICE_PATHS, edgeDeviceObject } from "./deploy/arhat_config.ts";
export { type Inventory, parseInventory, readInventory } from "./deploy/inventory.ts";
export { applyObject, aranyaObjects, FIELD_MANAGER } from "./deploy/manifests.ts";
export type { RemoteHost, RemoteResult } from "./deploy/remote_host.ts";
