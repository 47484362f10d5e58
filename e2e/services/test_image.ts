/**
 * The local test image: a busybox-static rootfs packed with tar, imported into
 * dockerd and Podman, and pushed to the local registry. Nothing is pulled from
 * the internet.
 */
import { ensureDir, removeAll, stateDir } from "../paths.ts";
import { run } from "../process.ts";
import { busyboxRootfs } from "./busybox_rootfs.ts";
import { EngineClient, type RegistryAuth } from "./engine_client.ts";

/** Name of the image as imported into each engine. */
export const TEST_IMAGE_REPO = "localhost/aranya-e2e/busybox";
export const TEST_IMAGE_TAG = "test";
export const TEST_IMAGE = `${TEST_IMAGE_REPO}:${TEST_IMAGE_TAG}`;

let building: Promise<Uint8Array<ArrayBuffer>> | undefined;

/** Builds (once per process, cached on disk) and returns the rootfs tarball. */
export function buildRootfsTar(): Promise<Uint8Array<ArrayBuffer>> {
  building ??= buildRootfsTarOnce().finally(() => building = undefined);
  return building;
}

async function buildRootfsTarOnce(): Promise<Uint8Array<ArrayBuffer>> {
  const dir = await ensureDir(stateDir("images"));
  const tarPath = `${dir}/busybox-rootfs.tar`;
  try {
    return await Deno.readFile(tarPath);
  } catch { /* build it */ }
  const root = `${dir}/rootfs-${crypto.randomUUID()}`;
  await removeAll(root);
  await busyboxRootfs(root);
  await Deno.writeTextFile(`${root}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
  await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\n");
  await Deno.chmod(`${root}/tmp`, 0o1777);
  await run("tar", [
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    "-C",
    root,
    "-cf",
    `${tarPath}.tmp`,
    ".",
  ]);
  await Deno.rename(`${tarPath}.tmp`, tarPath);
  await removeAll(root);
  return await Deno.readFile(tarPath);
}

/** Imports the test image into the engine at `socket` (idempotent). */
export async function importTestImage(socket: string): Promise<void> {
  const client = new EngineClient(socket);
  try {
    if (await client.hasImage(TEST_IMAGE)) return;
    await client.importImage(await buildRootfsTar(), TEST_IMAGE_REPO, TEST_IMAGE_TAG);
  } finally {
    client.close();
  }
}

/** Registry repository of the test image at `registry` ("host:port"). */
export function registryImage(registry: string): string {
  return `${registry}/aranya-e2e/busybox`;
}

/** Tags the test image for the registry and pushes it with `auth` through the engine at `socket`. */
export async function pushTestImage(
  socket: string,
  registry: string,
  auth: RegistryAuth,
): Promise<void> {
  const client = new EngineClient(socket);
  try {
    const repo = registryImage(registry);
    await client.tag(TEST_IMAGE, repo, TEST_IMAGE_TAG);
    const result = await client.push(repo, TEST_IMAGE_TAG, auth);
    if (!result.ok) throw new Error(`Pushing "${repo}:${TEST_IMAGE_TAG}" failed: ${result.error}`);
  } finally {
    client.close();
  }
}
