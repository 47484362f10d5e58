/**
 * Termination messages, as the kubelet keeps them: every container instance
 * gets its own empty, world-writable file under the pod's folder,
 * bind-mounted at its `terminationMessagePath` (default
 * /dev/termination-log); when the instance ended, the file's first 4 KiB are
 * its message. With the FallbackToLogsOnError policy, a failed instance that
 * wrote nothing gets the tail of its logs instead (80 lines, at most 2 KiB).
 */
import { concatBytes } from "@aranya/common/bytes";
import type { ContainerInfo, ContainerRuntime } from "../runtime/runtime.ts";
import { podDir } from "./volumes.ts";

/** The default path inside the container. */
export const DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log";
const MAX_MESSAGE = 4096;
const FALLBACK_LINES = 80;
const FALLBACK_BYTES = 2048;

/** The host file of one container instance. */
export function terminationMessageFile(
  stateDir: string,
  uid: string,
  container: string,
  restart: number,
): string {
  return `${podDir(stateDir, uid)}/termination/${container}-${restart}`;
}

/** Creates the instance's empty file (mode 0666: containers may run as any user). */
export async function createTerminationMessageFile(path: string): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
  await Deno.writeFile(path, new Uint8Array(), { mode: 0o666 });
  await Deno.chmod(path, 0o666);
}

/**
 * The message of an ended instance: its file's first 4 KiB, else (when
 * `fallbackToLogs` and it failed) the tail of its logs; "" when there is none.
 */
export async function readTerminationMessage(opts: {
  runtime: ContainerRuntime;
  file: string;
  container: ContainerInfo;
  fallbackToLogs: boolean;
}): Promise<string> {
  const text = await readHead(opts.file, MAX_MESSAGE);
  if (text !== "" || !opts.fallbackToLogs || opts.container.exitCode === 0) return text;
  try {
    // The whole log is streamed and only its end kept: the engines' own `tail` is not used
    // because Podman 4's drops a last line without its newline (`echo -n DONE; false` would
    // leave no message), and such an unfinished line is exactly what a crash leaves behind.
    let chunks: Uint8Array[] = [];
    let kept = 0;
    for await (const c of opts.runtime.logs(opts.container.id, {})) {
      chunks.push(c.data);
      kept += c.data.length;
      while (chunks.length > 1 && kept - chunks[0]!.length >= FALLBACK_BYTES) {
        kept -= chunks.shift()!.length;
      }
      if (chunks.length > 256) chunks = [concatBytes(chunks)];
    }
    return logTail(new TextDecoder().decode(concatBytes(chunks)));
  } catch {
    return "";
  }
}

/** The kubelet's fallback message: the last 80 lines of the log, at most its last 2 KiB. */
export function logTail(text: string): string {
  const lines = text.split("\n");
  // A trailing newline ends the last line; it does not start another.
  const count = text.endsWith("\n") ? FALLBACK_LINES + 1 : FALLBACK_LINES;
  const last = lines.length > count ? lines.slice(lines.length - count).join("\n") : text;
  return last.length > FALLBACK_BYTES ? last.slice(last.length - FALLBACK_BYTES) : last;
}

async function readHead(path: string, max: number): Promise<string> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return "";
  }
  try {
    const buf = new Uint8Array(max);
    let n = 0;
    while (n < max) {
      const r = await file.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    return new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    file.close();
  }
}
