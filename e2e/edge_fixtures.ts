/** Waits shared by the tests that connect devices to aranya. */
import { credentialsSecretName } from "../aranya/edgedevice/types.ts";
import { type ClusterHandle, eventually } from "./fixtures.ts";

/** The device's token from its credentials Secret, once aranya made it (decoded). */
export async function waitDeviceToken(
  cluster: ClusterHandle,
  namespace: string,
  name: string,
  timeoutMs = 60_000,
): Promise<string> {
  const b64 = await eventually(`the credentials Secret of "${namespace}/${name}"`, async () => {
    const r = await cluster.kubectl([
      "get",
      "secret",
      "-n",
      namespace,
      credentialsSecretName(name),
      "-o",
      "jsonpath={.data.token}",
    ]);
    return r.code === 0 && r.stdout ? r.stdout : undefined;
  }, timeoutMs);
  return atob(b64);
}

/** Waits until Node `name`'s Ready condition is `want`; resolves with "<status>/<reason>". */
export async function waitNodeReady(
  cluster: ClusterHandle,
  name: string,
  want: "True" | "False",
  timeoutMs = 60_000,
): Promise<string> {
  return await eventually(`Node "${name}" Ready=${want}`, async () => {
    const r = await cluster.kubectl([
      "get",
      "node",
      name,
      "-o",
      'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.status.conditions[?(@.type=="Ready")].reason}',
    ]);
    return r.code === 0 && r.stdout.startsWith(`${want}/`) ? r.stdout : undefined;
  }, timeoutMs);
}
