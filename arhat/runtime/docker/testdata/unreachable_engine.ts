/**
 * Child process of docker_runtime_test.ts: calls a DockerRuntime pointed at
 * the socket path given as the first argument (which nothing listens on) and
 * prints, as one JSON line, the error name and message of fetch-based calls
 * (version, exec) and of a hijacked connection. It runs in its own process because
 * the test permission set only allows the two live engine sockets.
 */
import { DockerRuntime } from "../docker_runtime.ts";
import { hijack } from "../hijack.ts";

const socket = Deno.args[0];
if (!socket) throw new Error("Usage: unreachable_engine.ts <socket path>");
const rt = new DockerRuntime({ socket });
const outcome = async (p: Promise<unknown>) => {
  try {
    await p;
    return { name: "none", message: "" };
  } catch (err) {
    return err instanceof Error
      ? { name: err.name, message: err.message }
      : { name: "unknown", message: String(err) };
  }
};
const result = {
  version: await outcome(rt.version()),
  exec: await outcome(rt.exec("some-container", { cmd: ["true"] })),
  hijack: await outcome(
    hijack({ socket, method: "POST", path: "/v1.41/exec/x/start", what: 'Starting exec "x"' }),
  ),
};
rt.close();
console.log(JSON.stringify(result));
