import assert from "node:assert/strict";
import { memoryFromMeminfo, parseMeminfo, parseProcStat, readNodeStats } from "./node_stats.ts";
import { createSystemProbe, type SystemProbe } from "./system_probe.ts";
import { permittedRunner } from "./testing/sh_runner.ts";

const STATE_DIR = new URL("../../.cache", import.meta.url).pathname;

const PROC_STAT = `cpu  100 20 30 4000 50 6 7 8 9 10
cpu0 50 10 15 2000 25 3 3 4 4 5
intr 12345 0 0
ctxt 999
btime 1700000000
processes 4242
`;

const MEMINFO = `MemTotal:        8000000 kB
MemFree:         1000000 kB
MemAvailable:    5000000 kB
Buffers:          100000 kB
AnonPages:        900000 kB
HugePages_Total:       0
`;

Deno.test("parseProcStat() sums busy jiffies (not idle, iowait or guest) at 10 ms each", () => {
  // user 100 + nice 20 + system 30 + irq 6 + softirq 7 + steal 8 = 171 jiffies.
  assert.deepEqual(parseProcStat(PROC_STAT), {
    busyNanoseconds: 171 * 10_000_000,
    bootTimeMs: 1_700_000_000_000,
  });
  assert.deepEqual(parseProcStat("cpu  1 2 3 4\n"), {
    busyNanoseconds: 60_000_000,
    bootTimeMs: undefined,
  });
  assert.equal(parseProcStat("cpu0 1 2 3 4\n"), undefined);
  assert.equal(parseProcStat(""), undefined);
});

Deno.test("parseMeminfo() and memoryFromMeminfo(): kB to bytes, working set = total - available", () => {
  const m = parseMeminfo(MEMINFO);
  assert.equal(m.MemTotal, 8_000_000 * 1024);
  assert.equal(m.HugePages_Total, 0);
  assert.deepEqual(memoryFromMeminfo(m), {
    usageBytes: 7_000_000 * 1024,
    workingSetBytes: 3_000_000 * 1024,
    availableBytes: 5_000_000 * 1024,
    rssBytes: 900_000 * 1024,
  });
  assert.equal(memoryFromMeminfo(parseMeminfo("MemTotal: 1 kB\n")), undefined);
});

Deno.test("readNodeStats() reads this host through the probe (cat for /proc)", async () => {
  const probe = createSystemProbe({ run: permittedRunner });
  const r = await readNodeStats({ stateDir: STATE_DIR, probe, now: () => 42 });
  assert.deepEqual(r.problems, []);
  assert.equal(r.timeMs, 42);
  assert.ok(r.cpuUsageCoreNanoseconds! > 0, `cpu ${r.cpuUsageCoreNanoseconds}`);
  assert.equal(r.cpuUsageCoreNanoseconds! % 10_000_000, 0, "whole jiffies");
  assert.ok(r.bootTimeMs! > Date.parse("2000-01-01") && r.bootTimeMs! < Date.now());
  const mem = r.memory!;
  const sys = Deno.systemMemoryInfo();
  assert.equal(mem.availableBytes + mem.workingSetBytes, sys.total);
  assert.ok(mem.workingSetBytes > 0 && mem.workingSetBytes <= mem.usageBytes, JSON.stringify(mem));
  assert.ok(mem.rssBytes !== undefined && mem.rssBytes > 0);
  const fs = r.fs!;
  const disk = await probe.diskUsage(STATE_DIR);
  assert.equal(fs.capacityBytes, disk.total);
  assert.equal(fs.usedBytes, fs.capacityBytes - fs.availableBytes);
  // CPU time only grows.
  const later = await readNodeStats({ stateDir: STATE_DIR, probe });
  assert.ok(later.cpuUsageCoreNanoseconds! >= r.cpuUsageCoreNanoseconds!);
});

Deno.test("readNodeStats() never rejects: unmeasurable parts are missing and named", async () => {
  const broken: SystemProbe = {
    readFile: () => Promise.reject(new Error("no /proc here")),
    diskUsage: () => Promise.reject(new Error("no disk here")),
    memory: () => ({ total: 1000, available: 400 }),
    cpuCount: () => 1,
  };
  const r = await readNodeStats({ stateDir: "/nowhere", probe: broken });
  assert.equal(r.cpuUsageCoreNanoseconds, undefined);
  assert.equal(r.fs, undefined);
  // Without /proc/meminfo, systemMemoryInfo's figures.
  assert.deepEqual(r.memory, { usageBytes: 600, workingSetBytes: 600, availableBytes: 400 });
  assert.deepEqual(r.problems.sort(), ["no /proc here", "no disk here"]);
});
