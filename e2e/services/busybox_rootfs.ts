/**
 * The skeleton of a test image's root filesystem: the usual folders, Debian's
 * static busybox and a link per applet. Both the suite's test image and the
 * conformance images start from it.
 */
import { ensureDir } from "../paths.ts";
import { run } from "../process.ts";

/**
 * Fills `root` with the folders (plus `extraDirs`), `busybox` (default
 * Debian's static one) as /bin/busybox and its applet links.
 */
export async function busyboxRootfs(
  root: string,
  extraDirs: string[] = [],
  busybox?: string,
): Promise<void> {
  for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "var", ...extraDirs]) {
    await ensureDir(`${root}/${d}`);
  }
  await Deno.copyFile(busybox ?? "/bin/busybox", `${root}/bin/busybox`);
  await Deno.chmod(`${root}/bin/busybox`, 0o755);
  // Debian's is run by name (the permission set allows "busybox", not its path).
  const applets = (await run(busybox ?? "busybox", ["--list"])).split("\n").filter((a) =>
    a && a !== "busybox"
  );
  // Deno.symlink needs unscoped read+write permissions; one `ln` loop in sh does not.
  await run("sh", [
    "-c",
    'cd "$0" && for a in $APPLETS; do ln -s busybox "$a"; done',
    `${root}/bin`,
  ], { env: { APPLETS: applets.join(" ") } });
}
