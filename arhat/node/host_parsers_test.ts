import assert from "node:assert/strict";
import {
  armVariantFromCpuinfo,
  goArch,
  osImageFromOsRelease,
  parseDfOutput,
  parseLoadavg,
  parseMachineId,
  parseOsRelease,
  parsePositiveInt,
  parseUuid,
} from "./host_parsers.ts";

Deno.test("goArch() maps Deno arch names to GOARCH", () => {
  const cases: [string, string][] = [
    ["x86_64", "amd64"],
    ["aarch64", "arm64"],
    ["armv7l", "arm"],
    ["arm", "arm"],
    ["i686", "386"],
    ["riscv64", "riscv64"],
  ];
  for (const [input, want] of cases) assert.equal(goArch(input), want, input);
});

Deno.test("parseOsRelease() reads quoted, escaped and commented files", () => {
  const text = [
    "# comment",
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"',
    "NAME='Debian'",
    "VERSION_ID=12",
    'QUOTED="say \\"hi\\" \\$HOME"',
    "garbage line",
    "",
  ].join("\n");
  assert.deepEqual(parseOsRelease(text), {
    PRETTY_NAME: "Debian GNU/Linux 12 (bookworm)",
    NAME: "Debian",
    VERSION_ID: "12",
    QUOTED: 'say "hi" $HOME',
  });
});

Deno.test("osImageFromOsRelease() prefers PRETTY_NAME, then NAME VERSION", () => {
  const cases: [string, string | undefined][] = [
    ['PRETTY_NAME="Ubuntu 24.04 LTS"\nNAME="Ubuntu"', "Ubuntu 24.04 LTS"],
    ['NAME="Alpine Linux"\nVERSION="3.20.0"', "Alpine Linux 3.20.0"],
    ["NAME=Buildroot", "Buildroot"],
    ["ID=x", undefined],
    ["", undefined],
  ];
  for (const [text, want] of cases) assert.equal(osImageFromOsRelease(text), want, text);
});

Deno.test("armVariantFromCpuinfo() finds v6, v7 and v8", () => {
  const cases: [string, string, string | undefined][] = [
    [
      "Raspberry Pi 1 (reports architecture 7)",
      "processor\t: 0\nmodel name\t: ARMv6-compatible processor rev 7 (v6l)\nCPU architecture: 7\n",
      "v6",
    ],
    [
      "Raspberry Pi 2",
      "processor\t: 0\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nCPU architecture: 7\n",
      "v7",
    ],
    ["arm64 kernel", "processor\t: 0\nBogoMIPS\t: 108.00\nCPU architecture: 8\n", "v8"],
    [
      "old arm64 kernel",
      "Processor\t: AArch64 Processor rev 4 (aarch64)\nCPU architecture: AArch64\n",
      "v8",
    ],
    ["armv5", "model name\t: Feroceon 88FR131 rev 1 (v5l)\nCPU architecture: 5TE\n", "v5"],
    [
      "x86",
      "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n",
      undefined,
    ],
  ];
  for (const [name, text, want] of cases) assert.equal(armVariantFromCpuinfo(text), want, name);
});

Deno.test("parseLoadavg() reads the running/total task counts", () => {
  const cases: [string, ReturnType<typeof parseLoadavg>][] = [
    ["0.50 0.69 1.71 1/142 24372\n", { running: 1, total: 142 }],
    ["12.00 8.00 4.00 37/31000 4194303", { running: 37, total: 31000 }],
    ["0.50 0.69 1.71\n", undefined],
    ["0.50 0.69 1.71 x/142 1", undefined],
    ["", undefined],
  ];
  for (const [text, want] of cases) assert.deepEqual(parseLoadavg(text), want, text);
});

Deno.test("parsePositiveInt() accepts only positive integers", () => {
  const cases: [string, number | undefined][] = [
    ["32768\n", 32768],
    ["4194304", 4194304],
    ["0\n", undefined],
    ["-1", undefined],
    ["12 13", undefined],
    ["", undefined],
    ["99999999999999999999", undefined],
  ];
  for (const [text, want] of cases) assert.equal(parsePositiveInt(text), want, text);
});

Deno.test("parseMachineId() and parseUuid() validate and normalise ids", () => {
  const ids: [string, string | undefined][] = [
    ["3d1219c7c4c5404aaa1f6d2a48adfda4\n", "3d1219c7c4c5404aaa1f6d2a48adfda4"],
    ["3D1219C7C4C5404AAA1F6D2A48ADFDA4", "3d1219c7c4c5404aaa1f6d2a48adfda4"],
    ["uninitialized\n", undefined],
    ["00000000000000000000000000000000", undefined],
    ["3d1219c7", undefined],
  ];
  for (const [text, want] of ids) assert.equal(parseMachineId(text), want, text);
  const uuids: [string, string | undefined][] = [
    ["6F1C8D0E-1D69-4E78-9D14-5882A349FBDA\n", "6f1c8d0e-1d69-4e78-9d14-5882a349fbda"],
    ["6f1c8d0e1d694e789d145882a349fbda", undefined],
    ["", undefined],
  ];
  for (const [text, want] of uuids) assert.equal(parseUuid(text), want, text);
});

Deno.test("parseDfOutput() reads POSIX df output in bytes and KiB", () => {
  const cases: [string, string, ReturnType<typeof parseDfOutput>][] = [
    [
      "GNU -B1",
      "Filesystem         1-blocks        Used   Available Capacity Mounted on\n" +
      "/dev/vda       270553174016 17184411648 80608882688      18% /\n",
      { total: 270553174016, available: 80608882688 },
    ],
    [
      "busybox, no -B",
      "Filesystem           1024-blocks    Used Available Capacity Mounted on\n" +
      "/dev/vda             264212084  16783936  78717328  18% /\n",
      { total: 264212084 * 1024, available: 78717328 * 1024 },
    ],
    [
      "spaces in names",
      "Filesystem 1-blocks Used Available Capacity Mounted on\n" +
      "//nas/share name 1000 400 600 40% /mnt/my share\n",
      { total: 1000, available: 600 },
    ],
    ["error output", "df: /nope: No such file or directory\n", undefined],
    ["header only", "Filesystem 1-blocks Used Available Capacity Mounted on\n", undefined],
  ];
  for (const [name, text, want] of cases) assert.deepEqual(parseDfOutput(text), want, name);
});
