/**
 * Pure parsers for what arhat reads about its host: `/etc/os-release`,
 * `/proc/cpuinfo`, `/proc/loadavg`, `/proc/sys/kernel/pid_max`,
 * `/etc/machine-id` and `df -P` output. No I/O here; `system_probe.ts` reads,
 * these interpret. Each returns `undefined` when the input does not hold
 * what it looks for, never throws.
 */

/** GOARCH-style name of a Deno/Rust target arch: x86_64 -> amd64, aarch64 -> arm64, arm -> arm. */
export function goArch(denoArch: string): string {
  switch (denoArch) {
    case "x86_64":
      return "amd64";
    case "aarch64":
      return "arm64";
    case "x86":
    case "i686":
      return "386";
    default:
      return denoArch.startsWith("arm") ? "arm" : denoArch;
  }
}

/**
 * The fields of an os-release file (`KEY=value`, values optionally quoted with `"` or `'`,
 * backslash escapes inside double quotes, `#` comments), as systemd documents the format.
 */
export function parseOsRelease(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2]!;
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
      value = value.slice(1, -1).replace(/\\([\\$"`])/g, "$1");
    } else if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) {
      value = value.slice(1, -1);
    }
    fields[m[1]!] = value;
  }
  return fields;
}

/**
 * The OS image as the kubelet reports it: `PRETTY_NAME`, else `NAME VERSION`, else `NAME`;
 * undefined when the file names nothing.
 */
export function osImageFromOsRelease(text: string): string | undefined {
  const f = parseOsRelease(text);
  if (f.PRETTY_NAME) return f.PRETTY_NAME;
  if (f.NAME) return f.VERSION ? `${f.NAME} ${f.VERSION}` : f.NAME;
  return undefined;
}

/**
 * The ARM variant ("v5".."v8") from `/proc/cpuinfo`: the `model name` when it says
 * `ARMv6`-style (a Raspberry Pi 1 reports architecture 7 but is ARMv6), else
 * `CPU architecture` (`7`, `8`, or `AArch64` on old arm64 kernels).
 */
export function armVariantFromCpuinfo(text: string): string | undefined {
  const model = /^model name\s*:.*\bARMv(\d+)/im.exec(text);
  if (model) return `v${model[1]}`;
  const arch = /^CPU architecture\s*:\s*(\S+)/im.exec(text)?.[1];
  if (!arch) return undefined;
  if (/^aarch64$/i.test(arch)) return "v8";
  const n = /^(\d+)/.exec(arch)?.[1];
  return n ? `v${n}` : undefined;
}

/** Scheduling entities from `/proc/loadavg` ("0.50 0.69 1.71 1/142 24372": 1 running, 142 in total). */
export interface LoadavgTasks {
  running: number;
  total: number;
}

/** The 4th field of `/proc/loadavg`. */
export function parseLoadavg(text: string): LoadavgTasks | undefined {
  const m = /^\s*\S+\s+\S+\s+\S+\s+(\d+)\/(\d+)(\s|$)/.exec(text);
  return m ? { running: Number(m[1]), total: Number(m[2]) } : undefined;
}

/** A positive integer file such as `/proc/sys/kernel/pid_max`. */
export function parsePositiveInt(text: string): number | undefined {
  const m = /^\s*(\d+)\s*$/.exec(text);
  const n = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/**
 * A machine id (`/etc/machine-id`, `/var/lib/dbus/machine-id`): 32 lowercase hex digits.
 * The systemd placeholder "uninitialized" and all-zero ids are rejected.
 */
export function parseMachineId(text: string): string | undefined {
  const id = text.trim().toLowerCase();
  return /^[0-9a-f]{32}$/.test(id) && !/^0+$/.test(id) ? id : undefined;
}

/** A UUID such as `/sys/class/dmi/id/product_uuid` or `boot_id`, lowercased. */
export function parseUuid(text: string): string | undefined {
  const id = text.trim().toLowerCase();
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id) ? id : undefined;
}

/** Size and free space of a file system, bytes. */
export interface DiskUsage {
  total: number;
  /** Available to unprivileged users (what `df` calls Available). */
  available: number;
}

/**
 * The file system line of `df -P -B1 <dir>` (POSIX format, 1-byte blocks): the last line whose
 * columns are `Filesystem 1-blocks Used Available Capacity Mounted-on`. Tolerates spaces in
 * the device and mount names and a `1024-blocks` header (then scales by 1024).
 */
export function parseDfOutput(text: string): DiskUsage | undefined {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  const header = lines[0];
  const unit = /^\S+\s+(\d+)-blocks\b/i.exec(header ?? "")?.[1];
  const scale = unit ? Number(unit) : 1;
  for (const line of lines.slice(1).reverse()) {
    const m = /^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%|-)\s+(\/.*)$/.exec(line);
    if (m) return { total: Number(m[2]) * scale, available: Number(m[4]) * scale };
  }
  return undefined;
}
