/**
 * The busybox of the conformance images: Debian's own busybox source (the
 * version of the installed busybox-static), built with Debian's static
 * configuration with the options of {@link OPTIONS} changed, into
 * `.cache/conformance/bin/busybox`.
 *
 * Why: upstream's busybox image (1.37) keeps environment variables whose
 * names are not shell identifiers (`data-1`, which Kubernetes allows) when its
 * `sh` runs a command, and the env specs read them from `sh -c env`; the ash of
 * Debian's 1.35 drops them at start unless that option is on (Debian turns it
 * on only for its installer's build). Everything else stays Debian's busybox,
 * so the specs that compare busybox's own messages still see them.
 *
 * The source comes from the Debian archive the machine already uses (its
 * deb-src twin), through a private apt list in `.cache/conformance/apt`: the
 * machine's apt configuration is not changed. Built once per source version
 * (about 30 s on 2 cores).
 */
import { sha256Hex } from "@aranya/common/digest";
import { CACHE, ensureDir, exists, removeAll } from "../paths.ts";
import { run } from "../process.ts";
import { BIN_DIR } from "./build.ts";

/** The built busybox. */
export const BUSYBOX = `${BIN_DIR}/busybox`;

/** Debian packages the build needs -> why. */
export const BUSYBOX_BUILD_PACKAGES: Readonly<Record<string, string>> = {
  "dpkg-dev": "dpkg-source, to unpack Debian's busybox source with its patches",
  "gcc": "compiling busybox",
  "make": "busybox's build",
  "libc6-dev": "static glibc for a static busybox",
  "bzip2": "busybox's upstream tarball",
  "xz-utils": "Debian's packaging tarball",
  "busybox-static": "the version (and configuration) the build follows",
};

/**
 * The options changed from Debian's static configuration: ash keeps odd
 * environment names (above), and commands are found through PATH as in
 * upstream's image (Debian's rescue build prefers its own applets, so the
 * agnhost image's netcat-openbsd `nc` would never run from `sh -c`).
 */
const OPTIONS: Record<string, "y" | "n"> = {
  CONFIG_FEATURE_DI_ENV_HACK: "y",
  CONFIG_FEATURE_PREFER_APPLETS: "n",
  CONFIG_FEATURE_SH_STANDALONE: "n",
};

const APT_DIR = `${CACHE}/conformance/apt`;
const SRC_DIR = `${CACHE}/conformance/busybox-src`;

/** deb-src entries for the archives of the machine's deb822 or one-line apt sources. */
export function debSrcLines(sources: string[]): string[] {
  const out = new Set<string>();
  for (const text of sources) {
    for (const stanza of text.split(/\n\s*\n/)) {
      const field = (name: string) =>
        stanza.match(new RegExp(`^${name}:\\s*(.+)$`, "mi"))?.[1]?.trim();
      const types = field("Types");
      if (types?.split(/\s+/).includes("deb")) {
        const uris = field("URIs")?.split(/\s+/) ?? [];
        const suites = field("Suites")?.split(/\s+/) ?? [];
        const components = field("Components") ?? "main";
        const signed = field("Signed-By");
        const opts = signed ? ` [signed-by=${signed}]` : "";
        for (const u of uris) {
          for (const s of suites) out.add(`deb-src${opts} ${u} ${s} ${components}`);
        }
      }
    }
    for (const line of text.split("\n")) {
      const m = line.match(/^\s*deb(\s+\[[^\]]*\])?\s+(\S+)\s+(.+)$/);
      if (m) out.add(`deb-src${m[1] ?? ""} ${m[2]} ${m[3]}`);
    }
  }
  return [...out];
}

async function machineSources(): Promise<string[]> {
  const texts: string[] = [];
  const main = await Deno.readTextFile("/etc/apt/sources.list").catch(() => "");
  if (main) texts.push(main);
  const parts = "/etc/apt/sources.list.d";
  const names = await Array.fromAsync(Deno.readDir(parts)).catch(() => []);
  for (const e of names) {
    if (e.isFile && /\.(list|sources)$/.test(e.name)) {
      texts.push(await Deno.readTextFile(`${parts}/${e.name}`));
    }
  }
  return texts;
}

/** apt-get with the private deb-src list and state folders. */
function apt(args: string[], cwd?: string): Promise<string> {
  return run("apt-get", [
    "-q",
    "-o",
    `Dir::Etc::SourceList=${APT_DIR}/sources.list`,
    "-o",
    "Dir::Etc::SourceParts=/nonexistent",
    "-o",
    `Dir::State::Lists=${APT_DIR}/lists`,
    "-o",
    `Dir::Cache=${APT_DIR}/cache`,
    "-o",
    "APT::Sandbox::User=root",
    ...args,
  ], { cwd });
}

/**
 * Builds {@link BUSYBOX} unless the one there matches the installed
 * busybox-static's source version. Returns its path.
 */
export async function ensureBusyboxBuilt(log: (line: string) => void = () => {}): Promise<string> {
  const source = (await run("dpkg-query", ["-W", "-f=${source:Version}", "busybox-static"]))
    .trim();
  if (!source) throw new Error('The Debian package "busybox-static" is not installed');
  const want = sha256Hex([source, JSON.stringify(OPTIONS)].join("\0"));
  const stampFile = `${BUSYBOX}.stamp`;
  if (
    await exists(BUSYBOX) && (await Deno.readTextFile(stampFile).catch(() => "")).trim() === want
  ) {
    return BUSYBOX;
  }
  const t0 = performance.now();
  log(`building busybox ${source} (Debian's source, static, ${Object.keys(OPTIONS).join(", ")})`);
  const lines = debSrcLines(await machineSources());
  if (lines.length === 0) {
    throw new Error("No Debian archive found in /etc/apt to fetch busybox's source from");
  }
  await removeAll(SRC_DIR);
  for (const d of [`${APT_DIR}/lists/partial`, `${APT_DIR}/cache/archives/partial`, SRC_DIR]) {
    await ensureDir(d);
  }
  await Deno.writeTextFile(`${APT_DIR}/sources.list`, lines.join("\n") + "\n");
  await apt(["update"]);
  const indexes = await Array.fromAsync(Deno.readDir(`${APT_DIR}/lists`));
  if (!indexes.some((e) => /_Sources(\.\w+)?$/.test(e.name))) {
    throw new Error(
      `apt-get update fetched no source index from ${lines.map((l) => `"${l}"`).join(", ")}`,
    );
  }
  await apt(["source", "--download-only", `busybox=${source}`], SRC_DIR);
  const dsc = [...Deno.readDirSync(SRC_DIR)].find((e) => e.name.endsWith(".dsc"))?.name;
  if (!dsc) throw new Error(`apt-get source left no .dsc in "${SRC_DIR}"`);
  await run("dpkg-source", ["-x", dsc, "src"], { cwd: SRC_DIR });
  const dir = `${SRC_DIR}/src`;
  let config = await Deno.readTextFile(`${dir}/debian/config/pkg/static`);
  for (const [k, v] of Object.entries(OPTIONS)) {
    const line = new RegExp(`^(# )?${k}( is not set|=.*)$`, "m");
    if (!line.test(config)) throw new Error(`Debian's busybox configuration has no ${k}`);
    config = config.replace(line, v === "y" ? `${k}=y` : `# ${k} is not set`);
  }
  await Deno.writeTextFile(`${dir}/.config`, config);
  // oldconfig settles options the change may enable; every question gets its default.
  await run("make", ["oldconfig"], { cwd: dir, stdin: new TextEncoder().encode("\n".repeat(500)) });
  const cores = String(navigator.hardwareConcurrency || 2);
  await run("make", [`-j${cores}`, "busybox"], { cwd: dir });
  // Deno refuses to write a file that is also an allowed executable; install(1) writes it.
  await run("sh", ["-c", 'install -m 0755 "$0" "$1"', `${dir}/busybox`, BUSYBOX]);
  await Deno.writeTextFile(stampFile, want + "\n");
  await removeAll(SRC_DIR);
  log(`built ${BUSYBOX} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return BUSYBOX;
}

if (import.meta.main) {
  await ensureBusyboxBuilt((line) => console.error(`[busybox] ${line}`));
}
