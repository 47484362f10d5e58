/**
 * A private OpenSSH server (Debian's openssh-server) on 127.0.0.1, for the
 * deploy tests: public-key login as root only, keys generated fresh under
 * `.cache/<instance>` with ssh-keygen.
 */
import { ensureDir, removeAll, stateDir } from "../paths.ts";
import {
  freePort,
  isAlive,
  run,
  type ServiceProcess,
  startService,
  stopFromPidFile,
  stopPid,
  waitReady,
} from "../process.ts";
import { refuseInUnitRun } from "../unit_run.ts";

/** The sshd binary, by absolute path (deno.json's e2e permission set names it so). */
export const SSHD_BIN = "/usr/sbin/sshd";

/**
 * sshd's privilege separation folder, fixed at build time; sshd refuses to
 * start without it.
 */
const PRIVSEP_DIR = "/run/sshd";

/** A running SSH server. */
export interface SshServer extends ServiceProcess {
  /** Always "127.0.0.1". */
  readonly address: string;
  readonly port: number;
  /** The user the client key logs in as ("root"). */
  readonly user: string;
  /** Private key (OpenSSH format, no passphrase) that is authorized. */
  readonly clientKeyFile: string;
  /** Its public key line ("ssh-ed25519 AAAA... comment"). */
  readonly clientPublicKey: string;
  /** A private key (no passphrase) that is NOT authorized. */
  readonly wrongKeyFile: string;
  /** The server's host key as "ssh-ed25519 AAAA..." (type and base64, no comment). */
  readonly hostPublicKey: string;
  /** The host key's fingerprint as `ssh-keygen -l` prints it ("SHA256:..."). */
  readonly hostKeyFingerprint: string;
  /** The `extraHostKeys` host keys, as "type AAAA..." lines in the order asked for. */
  readonly extraHostPublicKeys: string[];
  /** A known_hosts file with the single line "[127.0.0.1]:PORT ssh-ed25519 AAAA...". */
  readonly knownHostsFile: string;
  /** Its state folder (keys, config, log). */
  readonly dir: string;
  /** Its state folder's name under .cache. */
  readonly instance: string;
}

/** Stops an sshd left over from an earlier run of `instance`. */
export async function stopSshd(instance: string): Promise<void> {
  await stopFromPidFile(`${stateDir(instance)}/service.pid`, SSHD_BIN);
}

/**
 * Generates keys and a config under a fresh state folder, starts sshd on a
 * free port (or `port`) and waits until it sends its SSH banner.
 *
 * `stop()` stops the listener and the per-connection sshd processes it forked,
 * then removes the state folder unless `keepState` is set. `extraHostKeys`
 * adds host keys of other types after the ed25519 one (known_hosts still
 * lists only the ed25519 key), to test host key algorithm negotiation.
 */
export async function startSshd(
  opts: {
    port?: number;
    instance?: string;
    keepState?: boolean;
    extraHostKeys?: ("ecdsa" | "rsa")[];
  } = {},
): Promise<SshServer> {
  refuseInUnitRun("sshd");
  const instance = opts.instance ?? `sshd-${crypto.randomUUID().slice(0, 8)}`;
  const dir = stateDir(instance);
  await stopSshd(instance);
  await removeAll(dir);
  await ensureDir(dir);
  // The e2e permission set cannot write under /run; sh can.
  await run("sh", ["-c", `mkdir -p ${PRIVSEP_DIR} && chmod 0755 ${PRIVSEP_DIR}`]);

  const hostKeyFile = `${dir}/ssh_host_ed25519_key`;
  const clientKeyFile = `${dir}/client_ed25519`;
  const wrongKeyFile = `${dir}/wrong_ed25519`;
  const extraKeyFiles = (opts.extraHostKeys ?? []).map((t) => `${dir}/ssh_host_${t}_key`);
  await Promise.all([
    keygen(hostKeyFile, `aranya-e2e-host-${instance}`),
    keygen(clientKeyFile, `aranya-e2e-client-${instance}`),
    keygen(wrongKeyFile, `aranya-e2e-wrong-${instance}`),
    ...(opts.extraHostKeys ?? []).map((t, i) =>
      keygen(extraKeyFiles[i]!, `aranya-e2e-host-${instance}`, t)
    ),
  ]);
  const extraHostPublicKeys = await Promise.all(
    extraKeyFiles.map(async (f) => publicKeyLine(await Deno.readTextFile(`${f}.pub`))),
  );
  const clientPublicKey = (await Deno.readTextFile(`${clientKeyFile}.pub`)).trim();
  const hostPublicKey = publicKeyLine(await Deno.readTextFile(`${hostKeyFile}.pub`));
  const hostKeyFingerprint = (await run("ssh-keygen", ["-l", "-f", `${hostKeyFile}.pub`]))
    .split(/\s+/)[1] ?? "";

  const port = opts.port ?? freePort();
  const authorizedKeysFile = `${dir}/authorized_keys`;
  const knownHostsFile = `${dir}/known_hosts`;
  await Deno.writeTextFile(authorizedKeysFile, `${clientPublicKey}\n`, { mode: 0o600 });
  await Deno.writeTextFile(knownHostsFile, `[127.0.0.1]:${port} ${hostPublicKey}\n`);
  const configFile = `${dir}/sshd_config`;
  await Deno.writeTextFile(
    configFile,
    `ListenAddress 127.0.0.1
Port ${port}
${[hostKeyFile, ...extraKeyFiles].map((f) => `HostKey ${f}`).join("\n")}
AuthorizedKeysFile ${authorizedKeysFile}
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
StrictModes no
UsePAM no
PidFile ${dir}/sshd.pid
AllowTcpForwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
`,
  );

  const svc = await startService({
    name: "sshd",
    cmd: SSHD_BIN,
    args: ["-D", "-e", "-f", configFile],
    logFile: `${dir}/sshd.log`,
    pidFile: `${dir}/service.pid`,
  });
  try {
    await waitReady(svc, () => hasBanner(port), 30_000);
  } catch (err) {
    await svc.stop(2_000);
    throw err;
  }
  const stop = async (graceMs = 5_000) => {
    // Connections are served by forked children that outlive the listener.
    const children = childPids(svc.pid);
    await svc.stop(graceMs);
    for (const pid of children) await stopPid(pid, graceMs);
    if (!opts.keepState) await removeAll(dir);
  };
  return {
    ...svc,
    stop,
    address: "127.0.0.1",
    port,
    user: "root",
    clientKeyFile,
    clientPublicKey,
    wrongKeyFile,
    hostPublicKey,
    hostKeyFingerprint,
    extraHostPublicKeys,
    knownHostsFile,
    dir,
    instance,
  };
}

/** A key pair without passphrase at `file` and `file.pub`. */
async function keygen(file: string, comment: string, type = "ed25519"): Promise<void> {
  await run("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", comment, "-f", file]);
}

/** "type AAAA..." of a .pub file's text, without its comment. */
function publicKeyLine(pub: string): string {
  return pub.trim().split(/\s+/).slice(0, 2).join(" ");
}

/** True once the server at `port` sends its "SSH-2.0-" identification. */
async function hasBanner(port: number): Promise<boolean> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    return n !== null && new TextDecoder().decode(buf.subarray(0, n)).startsWith("SSH-2.0-");
  } finally {
    conn.close();
  }
}

/** Pids of the live direct children of `pid` (sshd forks one per connection), through procps `ps`. */
export function childPids(pid: number): number[] {
  const out = new Deno.Command("ps", {
    args: ["-o", "pid=", "--ppid", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).split("\n")
    .map((s) => Number.parseInt(s.trim(), 10))
    .filter((p) => Number.isInteger(p) && p > 1 && isAlive(p));
}
