/**
 * The test services (dockerd, Podman, mosquitto, registry) as one unit, so the
 * harness starts them once for a whole test run and exports where they are
 * through `ARANYA_TEST_*` environment variables.
 */
import { CACHE } from "../paths.ts";
import type { ServiceProcess } from "../process.ts";
import { DOCKER_SOCKET, startDockerd, stopDockerd } from "./dockerd.ts";
import { SHARED_BROKER, startMosquitto, stopMosquitto } from "./mosquitto.ts";
import { PODMAN_SOCKET, startPodman, stopPodman } from "./podman.ts";
import { REGISTRY_PASSWORD, REGISTRY_USER, startRegistry, stopRegistry } from "./registry.ts";
import { importTestImage, pushTestImage, TEST_IMAGE } from "./test_image.ts";
import { refuseInUnitRun } from "../unit_run.ts";

export { EngineClient, type RegistryAuth, type StreamResult } from "./engine_client.ts";
export { DOCKER_SOCKET } from "./dockerd.ts";
export { PODMAN_SOCKET, podmanEnv } from "./podman.ts";
export { REGISTRY_PASSWORD, REGISTRY_USER } from "./registry.ts";
export { registryImage, TEST_IMAGE, TEST_IMAGE_REPO, TEST_IMAGE_TAG } from "./test_image.ts";

/** Where the running services are. */
export interface ServiceEndpoints {
  dockerSocket: string;
  podmanSocket: string;
  /** "127.0.0.1:port" of the MQTT broker. */
  mqtt: string;
  /** "127.0.0.1:port" of the image registry. */
  registry: string;
  registryUser: string;
  registryPassword: string;
  /** The local test image, present in both engines. */
  testImage: string;
}

/** Running services. */
export interface Services {
  readonly endpoints: ServiceEndpoints;
  /** Stops all of them. Idempotent. */
  stop(): Promise<void>;
}

/** Environment variables that carry {@link ServiceEndpoints} to test processes. */
export function endpointsToEnv(e: ServiceEndpoints): Record<string, string> {
  return {
    ARANYA_TEST_DOCKER_SOCKET: e.dockerSocket,
    ARANYA_TEST_PODMAN_SOCKET: e.podmanSocket,
    ARANYA_TEST_MQTT: e.mqtt,
    ARANYA_TEST_REGISTRY: e.registry,
    ARANYA_TEST_REGISTRY_USER: e.registryUser,
    ARANYA_TEST_REGISTRY_PASSWORD: e.registryPassword,
    ARANYA_TEST_IMAGE: e.testImage,
  };
}

/** Reads {@link ServiceEndpoints} from the environment, or undefined when the harness did not set them. */
export function endpointsFromEnv(): ServiceEndpoints | undefined {
  const g = (k: string) => Deno.env.get(k);
  const docker = g("ARANYA_TEST_DOCKER_SOCKET");
  if (!docker) return undefined;
  const need = (k: string) => {
    const v = g(k);
    if (!v) {
      throw new Error(
        `Environment variable "${k}" is missing but ARANYA_TEST_DOCKER_SOCKET is set`,
      );
    }
    return v;
  };
  return {
    dockerSocket: docker,
    podmanSocket: need("ARANYA_TEST_PODMAN_SOCKET"),
    mqtt: need("ARANYA_TEST_MQTT"),
    registry: need("ARANYA_TEST_REGISTRY"),
    registryUser: need("ARANYA_TEST_REGISTRY_USER"),
    registryPassword: need("ARANYA_TEST_REGISTRY_PASSWORD"),
    testImage: need("ARANYA_TEST_IMAGE"),
  };
}

/**
 * Stops services left over from an earlier run (detached ones, or a run that
 * died). Waits first for a run that holds the services (see lockServices).
 */
export async function stopLeftoverServices(): Promise<void> {
  const lock = await lockServices(() => {});
  try {
    await Promise.all([stopDockerd(), stopPodman(), stopMosquitto(), stopRegistry()]);
  } finally {
    lock.close();
  }
}

/**
 * Starts every service, imports the test image into both engines and pushes it
 * to the registry. On failure, whatever started is stopped again.
 */
export async function startServices(
  opts: { detached?: boolean; log?: (line: string) => void } = {},
): Promise<Services> {
  refuseInUnitRun("the test services (container engines, broker, registry)");
  const log = opts.log ?? (() => {});
  // Detached services (services:up) outlive this process and cannot keep the lock, but they
  // wait for it, so they never stop the engines of a test run in progress.
  const lock = await lockServices(log);
  const started: ServiceProcess[] = [];
  const stopAll = async () => {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    started.length = 0;
    if (!opts.detached) lock.close();
  };
  try {
    log("starting registry and mosquitto");
    const registry = await startRegistry(opts);
    started.push(registry);
    const broker = await startMosquitto({ ...opts, instance: SHARED_BROKER });
    started.push(broker);
    log("starting dockerd and the Podman API service");
    const [docker, podman] = await Promise.all([
      startDockerd(opts),
      startPodman({ ...opts, insecureRegistries: [registry.address] }),
    ]);
    started.push(docker, podman);
    log(`importing ${TEST_IMAGE} into both engines and pushing it to ${registry.address}`);
    await Promise.all([importTestImage(DOCKER_SOCKET), importTestImage(PODMAN_SOCKET)]);
    await pushTestImage(DOCKER_SOCKET, registry.address, {
      username: REGISTRY_USER,
      password: REGISTRY_PASSWORD,
      serveraddress: registry.address,
    });
    if (opts.detached) lock.close();
    return {
      endpoints: {
        dockerSocket: DOCKER_SOCKET,
        podmanSocket: PODMAN_SOCKET,
        mqtt: broker.address,
        registry: registry.address,
        registryUser: REGISTRY_USER,
        registryPassword: REGISTRY_PASSWORD,
        testImage: TEST_IMAGE,
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/**
 * The services live at fixed sockets and folders, so two test runs on one
 * machine (two terminals, or parallel helpers) would stop each other's
 * engines. A run that starts them holds an exclusive lock on a file under
 * .cache/ until it stops them; a second run waits for it. The lock is the
 * kernel's (flock): a run that dies releases it.
 */
async function lockServices(log: (line: string) => void): Promise<Deno.FsFile> {
  await Deno.mkdir(CACHE, { recursive: true });
  const file = await Deno.open(`${CACHE}/services.lock`, { create: true, write: true });
  try {
    const first = file.lock(true);
    const waiting = setTimeout(
      () => log("waiting for another test run to stop its services (.cache/services.lock)"),
      1000,
    );
    await first.finally(() => clearTimeout(waiting));
  } catch (err) {
    file.close();
    throw err;
  }
  return file;
}
