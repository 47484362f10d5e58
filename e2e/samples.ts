/** The samples in deploy/samples, adapted to a test's device and image. */
import { parseAllDocuments } from "yaml";
import { ROOT } from "./paths.ts";

/** deploy/samples/workload.yaml with its nodeSelector on `device` and `image` (JSON documents). */
export async function sampleWorkload(device: string, image: string): Promise<string> {
  const text = await Deno.readTextFile(`${ROOT}/deploy/samples/workload.yaml`);
  return parseAllDocuments(text).map((d) => {
    const o = d.toJSON();
    if (o.kind === "Deployment") {
      o.spec.template.spec.nodeSelector["arhat.dev/name"] = device;
      o.spec.template.spec.containers[0].image = image;
    }
    return JSON.stringify(o);
  }).join("\n---\n");
}
