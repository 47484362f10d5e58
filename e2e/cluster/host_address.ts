/**
 * The address of this machine that pods on a worker node reach it at: the IPv4
 * address of the interface holding the default route (pods route everything
 * through their bridge's gateway to the host, which answers for any of its own
 * addresses). The control plane serves there when pods must reach the API
 * server (control_plane.ts, `address`).
 */
import { run } from "../process.ts";

/** The default route's interface's IPv4 address, or undefined when there is no default route. */
export async function hostAddress(): Promise<string | undefined> {
  const routes = JSON.parse(await run("ip", ["-j", "-4", "route", "show", "default"])) as {
    dev?: string;
  }[];
  const dev = routes.find((r) => r.dev)?.dev;
  if (!dev) return undefined;
  return Deno.networkInterfaces().find((i) => i.name === dev && i.family === "IPv4")?.address;
}
