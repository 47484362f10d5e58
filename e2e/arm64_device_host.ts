/**
 * An aarch64 SSH host on this x86_64 machine, for the arm64 deploy test: the test's own sshd
 * (services/sshd.ts) with a forced command on its client key that runs every command it is sent
 * in Debian's arm64 busybox (standalone shell: its applets, `uname` among them, are arm64 too)
 * under qemu user emulation. So `uname -m` there says "aarch64" and programs the deployer starts
 * run as arm64 when they are arm64 executables: the kernel hands those to `qemu-aarch64-static`
 * through a binfmt_misc handler ({@link useAarch64Binfmt}). File transfers (the SFTP subsystem)
 * go to the native sftp-server. The file system, engine sockets and network are this machine's.
 *
 * The handler is kernel-wide while it is registered: {@link Aarch64Binfmt.release} removes it (and
 * unmounts binfmt_misc when this module mounted it); a handler for aarch64 that was there before
 * (Debian's binfmt-support, say) is used and left alone.
 *
 * @module
 */
import { CACHE, ensureDir, exists } from "./paths.ts";
import { run } from "./process.ts";
import type { SshServer } from "./services/sshd.ts";

const BINFMT_DIR = "/proc/sys/fs/binfmt_misc";
/** Our handler's name, so only ours is removed. */
const HANDLER = "aranya-e2e-aarch64";
/**
 * Debian's handler line for aarch64 (qemu-user-static): ELF64 little-endian EXEC or DYN for
 * EM_AARCH64, run by the `aarch64-binfmt-P` name of the emulator with flags OPF. P (keep argv[0])
 * matters: busybox picks its applet by argv[0], and without P it would get the file's path.
 */
const DEBIAN_BINFMT_CONF = "/usr/lib/binfmt.d/qemu-aarch64.conf";
/** The aarch64 magic as /proc/sys/fs/binfmt_misc/<entry> prints it. */
const MAGIC_HEX = "7f454c460201010000000000000000000200b700";

/** A registered aarch64 handler. */
export interface Aarch64Binfmt {
  /** The handler's entry name. */
  name: string;
  /** False when a handler that was there already is used. */
  ours: boolean;
  /** Removes our handler and unmounts binfmt_misc if we mounted it; idempotent. */
  release(): Promise<void>;
}

async function sh(script: string, ...args: string[]): Promise<string> {
  return await run("sh", ["-c", script, "sh", ...args]);
}

/**
 * Makes the kernel run aarch64 executables with qemu-aarch64-static (binfmt_misc, mounted when it
 * is not), with Debian's handler line under our own name; flag F opens the emulator now, so it is
 * found from any mount namespace.
 *
 * @throws Error when binfmt_misc cannot be mounted or written (not root, or a kernel without it),
 *   or qemu-user-static's handler line is missing.
 */
export async function useAarch64Binfmt(): Promise<Aarch64Binfmt> {
  // The e2e permission set cannot write under /proc; sh (as root) can.
  const mounted = (await sh(
    `if [ -e ${BINFMT_DIR}/register ]; then echo no; ` +
      `else mount -t binfmt_misc binfmt_misc ${BINFMT_DIR} && echo yes; fi`,
  )).trim() === "yes";
  const unmount = async () => {
    if (mounted) await sh(`umount ${BINFMT_DIR}`).catch(() => {});
  };
  try {
    // An enabled handler for aarch64 that is not ours (a leftover of ours is replaced).
    const existing = (await sh(
      `for f in ${BINFMT_DIR}/*; do n=\${f##*/}; ` +
        `case "$n" in register|status|${HANDLER}) continue;; esac; ` +
        `grep -qx enabled "$f" && grep -qx "magic ${MAGIC_HEX}" "$f" && echo "$n"; done; true`,
    )).trim().split("\n")[0];
    if (existing) {
      await sh(`[ -e ${BINFMT_DIR}/${HANDLER} ] && echo -1 >${BINFMT_DIR}/${HANDLER}; true`);
      return { name: existing, ours: false, release: unmount };
    }
    const debian = (await Deno.readTextFile(DEBIAN_BINFMT_CONF)).trim();
    if (!debian.startsWith(":qemu-aarch64:M::")) {
      throw new Error(`"${DEBIAN_BINFMT_CONF}" is not the aarch64 handler line: "${debian}"`);
    }
    const spec = `${await ensureDir(`${CACHE}/arm64-e2e`)}/binfmt-${HANDLER}`;
    await Deno.writeTextFile(spec, debian.replace(":qemu-aarch64:", `:${HANDLER}:`));
    await sh(
      `[ -e ${BINFMT_DIR}/${HANDLER} ] && echo -1 >${BINFMT_DIR}/${HANDLER}; ` +
        `cat "$1" >${BINFMT_DIR}/register`,
      spec,
    );
  } catch (err) {
    await unmount();
    throw err;
  }
  let released = false;
  return {
    name: HANDLER,
    ours: true,
    release: async () => {
      if (released) return;
      released = true;
      await sh(`[ -e ${BINFMT_DIR}/${HANDLER} ] && echo -1 >${BINFMT_DIR}/${HANDLER}; true`);
      await unmount();
    },
  };
}

/**
 * Debian's arm64 busybox (package busybox-static:arm64), downloaded with `apt-get download` and
 * unpacked into the cache, never installed: it would replace the amd64 one the test image is made
 * of. Needs dpkg's arm64 architecture (host_setup.ts adds it with the arm64 packages).
 */
export async function ensureArm64Busybox(log: (line: string) => void): Promise<string> {
  const dir = `${CACHE}/arm64-busybox`;
  const path = `${dir}/root/bin/busybox`;
  if (await exists(path)) return path;
  await ensureDir(dir);
  log("downloading busybox-static:arm64 (apt-get download)");
  const download = () => run("apt-get", ["download", "-q", "busybox-static:arm64"], { cwd: dir });
  await download().catch(async () => {
    await run("apt-get", ["update", "-q"], { env: { DEBIAN_FRONTEND: "noninteractive" } });
    await download();
  });
  await sh(
    'set -e; cd "$1"; rm -rf root.tmp; mkdir root.tmp; ' +
      "dpkg-deb -x busybox-static_*_arm64.deb root.tmp; rm -f busybox-static_*_arm64.deb; " +
      "[ -x root.tmp/bin/busybox ]; rm -rf root; mv root.tmp root",
    dir,
  );
  return path;
}

/**
 * Sends every command of `sshd`'s client key to the arm64 `busybox`'s shell (authorized_keys
 * `command=`, read at each login, so the running sshd takes it at once).
 */
export async function forceArm64Shell(sshd: SshServer, busybox: string): Promise<void> {
  const shell = `${sshd.dir}/arm64-shell`;
  await Deno.writeTextFile(
    shell,
    `#!/bin/sh
# The aarch64 device's shell (e2e/arm64_device_host.ts): commands run in the arm64 busybox under
# qemu; the SFTP subsystem stays native.
if [ "$SSH_ORIGINAL_COMMAND" = "internal-sftp" ]; then exec /usr/lib/openssh/sftp-server; fi
exec ${busybox} sh -c "$SSH_ORIGINAL_COMMAND"
`,
    { mode: 0o755 },
  );
  await Deno.writeTextFile(
    `${sshd.dir}/authorized_keys`,
    `command="${shell}" ${sshd.clientPublicKey}\n`,
    { mode: 0o600 },
  );
}
