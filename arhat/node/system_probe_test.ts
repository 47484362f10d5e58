import assert from "node:assert/strict";
import { NotSupportedError } from "@aranya/common/errors";
import { parseDfOutput, parseLoadavg } from "./host_parsers.ts";
import { type CommandRunner, createSystemProbe, nodeStatFs } from "./system_probe.ts";
import { permittedRunner } from "./testing/sh_runner.ts";

const STATE_DIR = new URL("../../.cache", import.meta.url).pathname;
/** True under --allow-all, the only way Deno reads /proc directly. */
const PROC_READABLE = await Deno.readTextFile("/proc/loadavg").then(() => true, () => false);

function spy(inner: CommandRunner) {
  const calls: string[] = [];
  const run: CommandRunner = (cmd, args) => {
    calls.push([cmd, ...args].join(" "));
    return inner(cmd, args);
  };
  return { calls, run };
}

const notCapable: CommandRunner = (cmd) =>
  Promise.reject(new Deno.errors.NotCapable(`Requires run access to "${cmd}"`));

Deno.test("SystemProbe.readFile() reads ordinary files directly, without a subprocess", async () => {
  const { calls, run } = spy(notCapable);
  const probe = createSystemProbe({ run });
  assert.equal(await probe.readFile("/etc/os-release"), await Deno.readTextFile("/etc/os-release"));
  assert.equal(await probe.readFile("/etc/no-such-file"), undefined);
  assert.deepEqual(calls, []);
});

Deno.test("SystemProbe.readFile() reads /proc through cat when Deno refuses it", async () => {
  const { calls, run } = spy(permittedRunner);
  const probe = createSystemProbe({ run });
  const text = await probe.readFile("/proc/loadavg");
  const tasks = parseLoadavg(text ?? "");
  assert.ok(tasks && tasks.total >= 1 && tasks.running >= 1, `loadavg ${text}`);
  assert.equal(await probe.readFile("/proc/no-such-file"), undefined);
  // Under --allow-all the file is read directly; otherwise each read is one cat.
  assert.deepEqual(calls, PROC_READABLE ? [] : ["cat /proc/loadavg", "cat /proc/no-such-file"]);
});

Deno.test({
  name: "SystemProbe.readFile() says which permission is missing",
  ignore: PROC_READABLE,
  fn: async () => {
    const probe = createSystemProbe({ run: notCapable });
    await assert.rejects(probe.readFile("/proc/sys/kernel/pid_max"), (err: unknown) => {
      assert.ok(err instanceof NotSupportedError);
      assert.match(err.message, /^Cannot read "\/proc\/sys\/kernel\/pid_max": .*--allow-run=cat/);
      return true;
    });
  },
});

Deno.test("SystemProbe.diskUsage() agrees with df about the state dir's file system", async () => {
  const probe = createSystemProbe({ run: permittedRunner });
  const usage = await probe.diskUsage(STATE_DIR);
  const df = parseDfOutput((await permittedRunner("df", ["-P", "-B1", STATE_DIR])).stdout);
  assert.ok(df, "df output parses");
  assert.equal(usage.total, df.total);
  assert.ok(usage.available > 0 && usage.available <= usage.total);
  assert.ok(Math.abs(usage.available - df.available) < df.total * 0.01, "available within 1%");
  await assert.rejects(probe.diskUsage(`${STATE_DIR}/no-such-dir-${crypto.randomUUID()}`));
});

Deno.test("SystemProbe.diskUsage() asks df first and never loads statfs when df answers", async () => {
  const { calls, run } = spy(permittedRunner);
  let statfsCalls = 0;
  const probe = createSystemProbe({
    run,
    statfs: (dir) => {
      statfsCalls++;
      return nodeStatFs(dir);
    },
  });
  const usage = await probe.diskUsage(STATE_DIR);
  assert.deepEqual(calls, [`df -P -B1 ${STATE_DIR}`]);
  assert.equal(statfsCalls, 0);
  assert.ok(usage.total > 0);
});

Deno.test("SystemProbe.diskUsage() falls back to statfs when df cannot run or answer", async () => {
  for (
    const run of [
      notCapable,
      (() => Promise.reject(new Deno.errors.NotFound("df"))) as CommandRunner,
      // A busybox df without -B.
      () => Promise.resolve({ code: 1, stdout: "", stderr: "df: unrecognized option" }),
    ]
  ) {
    const usage = await createSystemProbe({ run, statfs: nodeStatFs }).diskUsage(STATE_DIR);
    const df = parseDfOutput((await permittedRunner("df", ["-P", "-B1", STATE_DIR])).stdout)!;
    assert.equal(usage.total, df.total);
  }
});

Deno.test("SystemProbe.diskUsage() names both ways to allow it when neither is permitted", async () => {
  const probe = createSystemProbe({
    run: notCapable,
    statfs: () => Promise.reject(new Deno.errors.NotCapable('Requires sys access to "statfs"')),
  });
  await assert.rejects(probe.diskUsage(STATE_DIR), (err: unknown) => {
    assert.ok(err instanceof NotSupportedError);
    assert.match(err.message, /--allow-run=df.*--allow-sys=statfs/);
    return true;
  });
});

Deno.test("SystemProbe.memory() and cpuCount() report this machine", () => {
  const probe = createSystemProbe();
  const m = probe.memory();
  assert.ok(m.total > 64 * 1024 * 1024, `total ${m.total}`);
  assert.ok(m.available > 0 && m.available <= m.total, `available ${m.available}`);
  assert.ok(probe.cpuCount() >= 1);
});
