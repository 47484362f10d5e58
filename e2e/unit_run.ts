/**
 * The services-free test run (`deno task test:unit`): which test files need
 * no service, and the guard that keeps them honest.
 *
 * A test file is in the unit run unless its name says it is an end-to-end or
 * smoke test (`*_e2e_test.ts`, `*_smoke_test.ts`), lives with the services
 * (`e2e/services/`, `e2e/cluster/`), or imports what starts services: the
 * fixtures (control plane, services, devices, link transports), the harnesses,
 * `e2e/services/`, `e2e/cluster/`, sshd, mosquitto, or aranya's test API
 * clients (the real API server). During the
 * run `ARANYA_TEST_UNIT=1` is set and every service starter calls
 * {@link refuseInUnitRun}, so a file that slips through fails loudly, naming
 * the service, instead of starting it.
 *
 * @module
 */
import { ROOT } from "./paths.ts";

/** Set during `deno task test:unit`. */
export const UNIT_RUN_ENV = "ARANYA_TEST_UNIT";

/** Test file names that are not unit tests by what they are. */
const NOT_UNIT_NAME = /(_e2e_test|_smoke_test)\.ts$/;
/** Imports that start services (or the real API server's clients). */
const SERVICE_IMPORT =
  /from\s+"[^"]*(?:fixtures|mqtt_fixture|harness|\/services\/|\/cluster\/|test_clients|node_setup|arm64_setup|sshd|mosquitto)[^"]*"/;
/** Folders whose tests start what they test (services, the control plane). */
const SERVICE_DIRS = ["e2e/services/", "e2e/cluster/"];
/** Folders never searched. */
const SKIPPED_DIRS = new Set([".cache", "node_modules", ".git", "dist"]);

/** True when the test file at `path` (from the root) with `source` needs no service. */
export function isUnitTest(path: string, source: string): boolean {
  return !NOT_UNIT_NAME.test(path) && !SERVICE_DIRS.some((d) => path.startsWith(d)) &&
    !SERVICE_IMPORT.test(source);
}

/** The unit test files of the repository, relative to its root, sorted. */
export async function unitTestFiles(root = ROOT): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) {
        if (!SKIPPED_DIRS.has(e.name) && !(rel === "e2e/" && e.name === "node")) {
          await walk(`${dir}/${e.name}`, `${rel}${e.name}/`);
        }
      } else if (e.isFile && e.name.endsWith("_test.ts")) {
        const source = await Deno.readTextFile(`${dir}/${e.name}`);
        if (isUnitTest(`${rel}${e.name}`, source)) out.push(`${rel}${e.name}`);
      }
    }
  };
  await walk(root, "");
  return out.sort();
}

/**
 * Throws when called during the unit run: `service` (e.g. "the control plane") must not start
 * there. Call first in every function that starts a service for a test.
 */
export function refuseInUnitRun(service: string): void {
  if (Deno.env.get(UNIT_RUN_ENV) !== "1") return;
  throw new Error(
    `This test needs ${service}, which "deno task test:unit" does not start: ` +
      `e2e/unit_run.ts must leave the file out of the unit run (run it with "deno task test")`,
  );
}
