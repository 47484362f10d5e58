/** Test helper: a command's output in a container, through a ContainerRuntime's exec. */
import type { ContainerRuntime } from "../../runtime/runtime.ts";

/** Runs `cmd` in container `id` and resolves with its stdout and stderr as text. */
export async function execText(rt: ContainerRuntime, id: string, cmd: string[]): Promise<string> {
  const h = await rt.exec(id, { cmd, stdout: true, stderr: true });
  let out = "";
  const dec = new TextDecoder();
  for await (const c of h.output) out += dec.decode(c.data, { stream: true });
  await h.exitCode;
  return out + dec.decode();
}
