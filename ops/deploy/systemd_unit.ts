/**
 * The systemd unit that keeps arhat running on a device (deploy/arhat/arhat.service).
 *
 * @module
 */
import { PROJECT_ROOT } from "../build/bundle.ts";

/** The unit file's text, as the deployer installs it. */
export async function systemdUnit(root = PROJECT_ROOT): Promise<string> {
  return await Deno.readTextFile(`${root}/deploy/arhat/arhat.service`);
}
