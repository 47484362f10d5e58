/**
 * A stand-in for aranya's container image (deploy/Dockerfile), built here with nothing fetched.
 *
 * The shipped image is aranya compiled with `deno compile` on distroless's `cc-debian12:nonroot`
 * base. Neither can be had offline: the base is pulled from gcr.io, and `deno compile` downloads
 * the `denort` runtime (the full deno binary cannot stand in for it: it ignores the embedded
 * program). So this image holds what is reachable, laid out the way the real one is seen from
 * outside:
 *
 * - `/usr/local/bin/aranya`, the entrypoint, as in the Dockerfile: here a small static program
 *   (e2e/cluster/cmd/aranya-standin) that runs the pinned deno (the one from npm running these
 *   tests) on aranya's bundle (ops/build/bundle.ts) under aranya's permission set and V8 flags,
 *   passing its arguments on. No shell: distroless has none either.
 * - `/usr/local/lib/aranya/`: deno, aranya.js (with its chunks), deno.json (the permission set),
 *   v8-flags.
 * - what distroless's cc image gives a program: glibc and libgcc_s (the libraries `ldd` lists for
 *   deno, copied from this machine), CA certificates (`/etc/ssl/certs/ca-certificates.crt`),
 *   `/etc/passwd` and `/etc/group` with root, nobody and nonroot (65532), `/tmp`.
 * - the config: user `65532:65532`, entrypoint `/usr/local/bin/aranya`, command
 *   `--config=/etc/aranya/config.yaml` (the Dockerfile's).
 *
 * It is tagged with the image name deploy/aranya/deployment.yaml names, so the Deployment runs
 * unchanged (`imagePullPolicy: IfNotPresent` finds it in containerd).
 */
import { parseAllDocuments } from "yaml";
import { bundleProgram, V8_FLAGS } from "@aranya/ops/build/bundle";
import { ensureDir, removeAll, ROOT } from "../paths.ts";
import { run } from "../process.ts";
import { binPath } from "../cluster/build.ts";
import { DEFAULT_PATH, writeOciArchive } from "../cluster/oci_archive.ts";

/** Where the stand-in keeps deno and the bundle (the entrypoint's constant). */
export const STANDIN_LIB = "/usr/local/lib/aranya";
/** The entrypoint, as in deploy/Dockerfile. */
export const ENTRYPOINT = "/usr/local/bin/aranya";
/** The non-root user of distroless's `nonroot` images, as in deploy/Dockerfile. */
export const NONROOT_UID = 65532;
const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

/** The image deploy/aranya/deployment.yaml runs (the container named "aranya"). */
export async function deployedImage(): Promise<string> {
  const text = await Deno.readTextFile(`${ROOT}/deploy/aranya/deployment.yaml`);
  for (const doc of parseAllDocuments(text)) {
    const obj = doc.toJS() as {
      kind?: string;
      spec?: { template?: { spec?: { containers?: { name: string; image: string }[] } } };
    };
    if (obj?.kind !== "Deployment") continue;
    const c = obj.spec?.template?.spec?.containers?.find((c) => c.name === "aranya");
    if (c?.image) return c.image;
  }
  throw new Error('deploy/aranya/deployment.yaml has no Deployment with a container "aranya"');
}

/** The shared libraries `ldd` lists for `binary` (absolute paths as the loader looks them up). */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const out = await run("ldd", [binary]);
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  if (!libs.some((l) => l.includes("libc.so"))) {
    throw new Error(`"ldd ${binary}" listed no C library:\n${out}`);
  }
  return libs;
}

/** What {@link writeStandinImage} made. */
export interface StandinImage {
  /** The OCI archive (oci_archive.ts). */
  archive: string;
  /** Its image name: deployment.yaml's. */
  name: string;
}

/** Builds the stand-in image into `dir` (a scratch folder it fills). */
export async function writeStandinImage(dir: string): Promise<StandinImage> {
  const name = await deployedImage();
  const root = `${dir}/rootfs`;
  await removeAll(root);
  const lib = await ensureDir(`${root}${STANDIN_LIB}`);
  const deno = Deno.execPath();
  await bundleProgram({ program: "aranya", outDir: lib });
  await Deno.copyFile(deno, `${lib}/deno`);
  await Deno.writeTextFile(`${lib}/v8-flags`, V8_FLAGS.aranya.join(",") + "\n");
  await ensureDir(`${root}/usr/local/bin`);
  await Deno.copyFile(binPath("aranya-standin"), `${root}${ENTRYPOINT}`);
  for (const l of await sharedLibraries(deno)) {
    await ensureDir(`${root}${l.replace(/\/[^/]*$/, "")}`);
    await Deno.copyFile(await Deno.realPath(l), `${root}${l}`);
  }
  await ensureDir(`${root}/etc/ssl/certs`);
  await Deno.copyFile(CA_BUNDLE, `${root}${CA_BUNDLE}`);
  await Deno.writeTextFile(
    `${root}/etc/passwd`,
    "root:x:0:0:root:/root:/sbin/nologin\n" +
      "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
      `nonroot:x:${NONROOT_UID}:${NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n`,
  );
  await Deno.writeTextFile(
    `${root}/etc/group`,
    `root:x:0:\nnobody:x:65534:\nnonroot:x:${NONROOT_UID}:\n`,
  );
  await Deno.chmod(await ensureDir(`${root}/tmp`), 0o1777);
  await ensureDir(`${root}/home/nonroot`);
  const layer = `${dir}/layer.tar`;
  await run("tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", root, "-cf", layer, "."]);
  await removeAll(root);
  const archive = await writeOciArchive(dir, [{
    name,
    layer: await Deno.readFile(layer),
    config: {
      User: `${NONROOT_UID}:${NONROOT_UID}`,
      Env: [DEFAULT_PATH, `SSL_CERT_FILE=${CA_BUNDLE}`],
      Entrypoint: [ENTRYPOINT],
      Cmd: ["--config=/etc/aranya/config.yaml"],
      WorkingDir: "/",
    },
  }]);
  await removeAll(layer);
  return { archive, name };
}
