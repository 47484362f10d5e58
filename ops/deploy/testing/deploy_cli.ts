/** `deno task deploy` as the tests run it: from the project root, colours off, no stdin. */
import { PROJECT_ROOT } from "../../build/bundle.ts";

/** Runs `deno task deploy ...args`; resolves with its exit code and output (stdout, then stderr). */
export async function runDeployTask(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("deno", {
    args: ["task", "--quiet", "deploy", ...args],
    cwd: PROJECT_ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}
