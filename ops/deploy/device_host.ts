/**
 * What the deployer does on a device host over one {@link RemoteHost}: probe it, compare and
 * install files, and keep arhat running (systemd, or a detached process with a pid file where
 * there is no systemd). Commands run as root: directly for root, else through `sudo -n`.
 *
 * @module
 */
import { InvalidInputError, UnavailableError } from "@aranya/common/errors";
import { DEVICE_PATHS } from "./arhat_config.ts";
import type { DeviceEntry } from "./inventory.ts";
import type { RemoteHost } from "./remote_host.ts";
import { shellQuote } from "@aranya/common/shell_quote";

/** A file to have on the device: its bytes come from a local file or from memory. */
export interface WantedFile {
  remote: string;
  mode: number;
  local?: string;
  data?: Uint8Array;
  sha256: string;
}

/** Facts about the device host. */
export interface Probe {
  arch: string;
  init: "systemd" | "none";
  /** "" for root, else "sudo -n ". */
  sudo: string;
}

export async function probeHost(host: RemoteHost, d: DeviceEntry): Promise<Probe> {
  // Always exits 0 on a working shell; each line answers one question.
  const r = await host.exec(
    "uname -m; id -u; if [ -d /run/systemd/system ]; then echo systemd; else echo none; fi; " +
      "if command -v sha256sum >/dev/null && command -v install >/dev/null; then echo tools; " +
      "else echo no-tools; fi",
  );
  const [arch = "", uid = "", init = "", tools = ""] = r.stdout.trim().split("\n");
  if (r.code !== 0) {
    throw new UnavailableError(
      `Probing ${host.label} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  if (tools !== "tools") {
    throw new UnavailableError(`${host.label} lacks "sha256sum" or "install" (coreutils)`);
  }
  if (arch !== d.arch) {
    throw new InvalidInputError(
      `${host.label} is "${arch}" but the inventory says arch "${d.arch}" for "${d.key}"`,
    );
  }
  if (d.init === "systemd" && init !== "systemd") {
    throw new UnavailableError(
      `The inventory says init "systemd" for "${d.key}" but ${host.label} does not run systemd`,
    );
  }
  const sudo = uid === "0" ? "" : "sudo -n ";
  if (sudo) {
    const s = await host.exec("sudo -n true");
    if (s.code !== 0) {
      throw new UnavailableError(
        `User "${d.user}" on ${host.label} is not root and cannot use sudo without a password ` +
          `(${s.stderr.trim() || `exit ${s.code}`})`,
      );
    }
  }
  return { arch, init: d.init === "none" ? "none" : init === "systemd" ? "systemd" : "none", sudo };
}

/** SHA-256 (hex) of each path on the device; missing files are absent from the map. */
export async function remoteHashes(
  host: RemoteHost,
  sudo: string,
  paths: string[],
): Promise<Map<string, string>> {
  const r = await host.exec(
    `${sudo}sh -c 'for f in "$@"; do [ -f "$f" ] && sha256sum "$f"; done; true' sh ${
      paths.map(shellQuote).join(" ")
    }`,
  );
  if (r.code !== 0) {
    throw new UnavailableError(`Hashing files on ${host.label} failed: ${r.stderr.trim()}`);
  }
  const out = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (m) out.set(m[2]!, m[1]!);
  }
  return out;
}

export async function installFiles(
  host: RemoteHost,
  sudo: string,
  files: WantedFile[],
): Promise<void> {
  const stage = (await run(host, "mktemp -d /tmp/arhat-deploy.XXXXXX")).trim();
  try {
    const cmds: string[] = [];
    for (const [i, f] of files.entries()) {
      const staged = `${stage}/${i}`;
      if (f.local) await host.upload(f.local, staged, 0o600);
      else await host.writeFile(staged, f.data!, 0o600);
      cmds.push(
        `${sudo}install -D -m ${f.mode.toString(8)} -o root -g root ${shellQuote(staged)} ${
          shellQuote(f.remote)
        }`,
      );
    }
    await run(host, cmds.join(" && "));
  } finally {
    await host.exec(`rm -rf ${shellQuote(stage)}`).catch(() => {});
  }
}

export async function isArhatRunning(host: RemoteHost, p: Probe): Promise<boolean> {
  if (p.init === "systemd") {
    return (await host.exec("systemctl is-active --quiet arhat")).code === 0;
  }
  const r = await host.exec(
    `pid=$(${p.sudo}cat ${DEVICE_PATHS.pidFile} 2>/dev/null) && [ -n "$pid" ] && ` +
      `${p.sudo}kill -0 "$pid" 2>/dev/null && ${p.sudo}grep -q arhat /proc/$pid/cmdline`,
  );
  return r.code === 0;
}

export async function startArhat(
  host: RemoteHost,
  p: Probe,
  o: { restart: boolean; unitChanged: boolean },
): Promise<void> {
  if (p.init === "systemd") {
    const s = p.sudo;
    const reload = o.unitChanged ? `${s}systemctl daemon-reload && ` : "";
    await run(
      host,
      `${reload}${s}systemctl enable --quiet arhat && ${s}systemctl ${
        o.restart ? "restart" : "start"
      } arhat`,
    );
    return;
  }
  // No systemd (busybox, OpenRC or container hosts): a detached arhat with a pid file. It does not
  // come back after a reboot; the summary says so.
  const script = [
    `pidf=${DEVICE_PATHS.pidFile}`,
    'if pid=$(cat "$pidf" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then',
    '  kill -TERM "$pid"; i=0',
    '  while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done',
    '  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"',
    "fi",
    `mkdir -p ${DEVICE_PATHS.stateDir}`,
    `cd / && setsid ${DEVICE_PATHS.bin} -c ${DEVICE_PATHS.config} </dev/null >>${DEVICE_PATHS.logFile} 2>&1 &`,
    'echo $! >"$pidf"',
  ].join("\n");
  await run(host, `${p.sudo}sh -c ${shellQuote(script)}`);
}

/** Enables arhat's unit (systemd only; a no-op without it). */
export async function enableArhat(host: RemoteHost, p: Probe): Promise<void> {
  if (p.init === "systemd") await run(host, `${p.sudo}systemctl enable --quiet arhat`);
}

/** The end of arhat's log on the device (journal or log file); "" when unreadable. */
export async function arhatLogTail(host: RemoteHost, p: Probe, lines = 15): Promise<string> {
  const cmd = p.init === "systemd"
    ? `${p.sudo}journalctl -u arhat -n ${lines} --no-pager`
    : `${p.sudo}tail -n ${lines} ${DEVICE_PATHS.logFile}`;
  return (await host.exec(cmd).catch(() => ({ stdout: "" }))).stdout.trim();
}

/** Runs a command that must succeed; resolves with its stdout. */
export async function run(host: RemoteHost, command: string): Promise<string> {
  const r = await host.exec(command);
  if (r.code !== 0) {
    throw new UnavailableError(
      `Command on ${host.label} failed (exit ${r.code}): ${command.split("\n")[0]}: ${
        (r.stderr || r.stdout).trim().split("\n").slice(-5).join(" | ")
      }`,
    );
  }
  return r.stdout;
}
