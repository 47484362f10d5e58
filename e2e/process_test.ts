/** Services die with the process that started them, even when it is killed. */
import assert from "node:assert/strict";
import { CACHE } from "./paths.ts";
import { isAlive, sleep, startService } from "./process.ts";

Deno.test("an attached service stops cleanly", async () => {
  const dir = `${CACHE}/test-process/${crypto.randomUUID()}`;
  const svc = await startService({
    name: "sleeper",
    cmd: "sh",
    args: ["-c", "echo started; exec sleep 600"],
    logFile: `${dir}/sleeper.log`,
    pidFile: `${dir}/sleeper.pid`,
  });
  try {
    await sleep(200);
    assert.ok(isAlive(svc.pid));
    assert.match(await Deno.readTextFile(svc.logFile), /started/);
  } finally {
    await svc.stop(2_000);
  }
  assert.equal(isAlive(svc.pid), false);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("an attached service dies when its parent is SIGKILLed", async () => {
  const dir = `${CACHE}/test-process/${crypto.randomUUID()}`;
  await Deno.mkdir(dir, { recursive: true });
  const script = `${dir}/parent.ts`;
  const processTs = new URL("./process.ts", import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import { startService } from "${processTs}";
const svc = await startService({ name: "orphan", cmd: "sh", args: ["-c", "exec sleep 600"],
  logFile: "${dir}/orphan.log", pidFile: "${dir}/orphan.pid" });
console.log(svc.pid);
await new Promise(() => {});
`,
  );
  const parent = new Deno.Command("deno", {
    args: ["run", "-P=e2e", "--no-prompt", script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = parent.stdout.getReader();
  const { value } = await reader.read();
  const childPid = Number(new TextDecoder().decode(value).trim());
  assert.ok(childPid > 1);
  assert.ok(isAlive(childPid));
  parent.kill("SIGKILL");
  await parent.status;
  reader.releaseLock();
  await parent.stdout.cancel();
  const deadline = Date.now() + 5_000;
  while (isAlive(childPid) && Date.now() < deadline) await sleep(50);
  assert.equal(isAlive(childPid), false, `orphan ${childPid} survived its parent`);
  await Deno.remove(dir, { recursive: true });
});
