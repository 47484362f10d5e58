/**
 * The images the conformance suite runs, built locally (nothing is pulled
 * from the internet), pushed to the project's registry and put on the device.
 *
 * - The registries of the pinned e2e framework (test/utils/image/manifest.go)
 *   are mapped to paths of the local registry by a `--kube-test-repo-list`
 *   file written at run time ({@link writeRepoList}); `e2e.test --list-images`
 *   with that file then names every image with the tag the framework expects,
 *   so no tag is written down here.
 * - Each image is one layer: a busybox rootfs (Debian's busybox, built from
 *   its source with the one option that makes its sh keep environment names
 *   such as `data-1`, as upstream's busybox does: busybox_build.ts), plus
 *   what the image adds:
 *   agnhost: the static agnhost built from the same Kubernetes module, its
 *   /agnhost-2 link, /uploads, the user and group defined in upstream's image
 *   and a curl stand-in on busybox wget (curl_shim.sh; the specs curl from
 *   agnhost containers), Debian's netcat-openbsd as `nc` with its libraries
 *   (upstream's image adds netcat-openbsd; the specs send UDP with `nc -u`,
 *   which busybox's nc lacks) (ENTRYPOINT /agnhost, CMD pause, as upstream);
 *   busybox: nothing (CMD sh);
 *   nonroot: the busybox layer as USER 1234; nonewprivs: nonewprivs' nnp from
 *   the same module, set-uid root (CMD nnp);
 *   pause: the agnhost layer with ENTRYPOINT `/agnhost pause`; httpd and nginx:
 *   stand-ins that serve their document root (/usr/local/apache2/htdocs,
 *   /usr/share/nginx/html) on port 80 with busybox's httpd, which is all the
 *   selected tests ask of them (a Running pod, an index.html to move away).
 * - Layers are imported into dockerd with their config (`changes`), tagged with
 *   the local registry's name, pushed there with the registry's credentials,
 *   and pulled into Podman when the device runs on Podman. The registry asks
 *   for credentials and the suite's pods carry no pull Secret, so the device's
 *   engine must hold the images beforehand (the pods' IfNotPresent policy then
 *   uses them, like a node's pre-pulled images); a pull the device would make
 *   itself fails "unauthorized".
 */
import { fileSha256Hex, sha256Hex } from "@aranya/common/digest";
import { CACHE, ensureDir, exists, removeAll } from "../paths.ts";
import { run } from "../process.ts";
import { busyboxRootfs } from "../services/busybox_rootfs.ts";
import { EngineClient, type RegistryAuth } from "../services/engine_client.ts";
import { AGNHOST, MODULE_DIR, NNP } from "./build.ts";
import { BUSYBOX } from "./busybox_build.ts";

/** Where rootfs tarballs are cached. */
const IMAGES_DIR = `${CACHE}/conformance/images`;

/** The e2e framework's registry list (keys of manifest.go's RegistryList). */
export type RepoList = Record<string, string>;

/**
 * Maps every registry of the e2e framework to a path of `registry`
 * ("host:port"), except the invalid registry, which must stay unreachable.
 */
export function repoList(registry: string): RepoList {
  return {
    gcAuthenticatedRegistry: `${registry}/authenticated-image-pulling`,
    promoterE2eRegistry: `${registry}/e2e-test-images`,
    buildImageRegistry: `${registry}/build-image`,
    invalidRegistry: "invalid.registry.k8s.io/invalid",
    gcEtcdRegistry: `${registry}/k8s`,
    gcRegistry: `${registry}/k8s`,
    sigStorageRegistry: `${registry}/sig-storage`,
    privateRegistry: `${registry}/k8s-authenticated-test`,
    dockerLibraryRegistry: `${registry}/library`,
    cloudProviderGcpRegistry: `${registry}/cloud-provider-gcp`,
  };
}

/** Writes the `--kube-test-repo-list` file for `registry`; returns its path. */
export async function writeRepoList(registry: string, dir: string): Promise<string> {
  await ensureDir(dir);
  const path = `${dir}/repo-list.yaml`;
  const text = Object.entries(repoList(registry)).map(([k, v]) => `${k}: ${v}\n`).join("");
  await Deno.writeTextFile(path, text);
  return path;
}

/** Every image reference the suite may use, from `e2e.test --list-images`. */
export async function listImages(e2eTest: string, repoListFile: string): Promise<string[]> {
  const out = await run(e2eTest, ["--list-images", `--kube-test-repo-list=${repoListFile}`], {
    env: { KUBE_TEST_REPO_LIST: repoListFile },
  });
  return out.split("\n").map((l) => l.trim()).filter((l) => /^[^\s]+\/[^\s]+:[^\s]+$/.test(l))
    .sort();
}

/** How one image is made. */
interface Recipe {
  /** Adds the image's files to the rootfs folder (the busybox base is there already). */
  files(root: string): Promise<void>;
  /** Inputs beyond the recipe's code that change the layer (e.g. a binary's digest). */
  inputs(): Promise<string>;
  entrypoint?: string[];
  cmd?: string[];
  /** The image's USER. */
  user?: string;
  /** Images made from the same layer share its tarball. */
  layer: string;
}

const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** What upstream's agnhost image adds to its base (test/images/agnhost/Dockerfile), minus tools. */
async function addAgnhost(root: string): Promise<void> {
  await Deno.copyFile(AGNHOST, `${root}/agnhost`);
  await Deno.chmod(`${root}/agnhost`, 0o755);
  // The entrypoint specs run /agnhost-2; Deno.symlink needs unscoped permissions, ln does not.
  await run("sh", ["-c", 'ln -s agnhost "$0/agnhost-2"', root]);
  // The test certificate and key netexec serves HTTPS with (--tls-cert-file /localhost.crt), as
  // upstream's Dockerfile adds them from the module's test/images/agnhost/porter.
  const porter = `${await kubernetesModuleDir()}/test/images/agnhost/porter`;
  for (const f of ["localhost.crt", "localhost.key"]) {
    await Deno.copyFile(`${porter}/${f}`, `${root}/${f}`);
    await Deno.chmod(`${root}/${f}`, 0o644);
  }
  await ensureDir(`${root}/uploads`);
  await ensureDir(`${root}/usr/bin`);
  await copyWithLibraries(root, NETCAT, "/usr/bin/nc");
  await Deno.copyFile(CURL_SHIM, `${root}/usr/bin/curl`);
  await Deno.chmod(`${root}/usr/bin/curl`, 0o755);
  await Deno.writeTextFile(
    `${root}/etc/passwd`,
    "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
    { append: true },
  );
  await Deno.writeTextFile(
    `${root}/etc/group`,
    "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n",
    { append: true },
  );
}

/**
 * Copies the dynamically linked `program` to `dest` inside `root` with every
 * library `ldd` resolves for it (and the loader) at the same paths.
 */
async function copyWithLibraries(root: string, program: string, dest: string): Promise<void> {
  const paths = (await run("ldd", [program])).split("\n").flatMap((line) => {
    const m = line.match(/(?:=>\s*)?(\/\S+)\s+\(0x/);
    return m?.[1] ? [m[1]] : [];
  });
  if (paths.length === 0) throw new Error(`ldd found no libraries of "${program}"`);
  const copies: [string, string][] = [
    [program, dest],
    ...paths.map((p): [string, string] => [p, p]),
  ];
  for (const [from, to] of copies) {
    await ensureDir(`${root}${to.replace(/\/[^/]*$/, "")}`);
    await Deno.copyFile(from, `${root}${to}`);
    await Deno.chmod(`${root}${to}`, 0o755);
  }
}

/** The pinned k8s.io/kubernetes module's folder in the Go module cache. */
async function kubernetesModuleDir(): Promise<string> {
  const dir = (await run("go", ["list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], {
    cwd: MODULE_DIR,
  })).trim();
  if (!dir) throw new Error("go list found no k8s.io/kubernetes module folder");
  return dir;
}

async function addWebServer(root: string, docRoot: string, program: string): Promise<void> {
  await ensureDir(`${root}${docRoot}`);
  await Deno.writeTextFile(
    `${root}${docRoot}/index.html`,
    "<html><body><h1>It works!</h1></body></html>\n",
  );
  const dir = program.replace(/\/[^/]*$/, "");
  await ensureDir(`${root}${dir}`);
  // The upstream images' commands (httpd-foreground, nginx -g 'daemon off;') start this.
  await Deno.writeTextFile(
    `${root}${program}`,
    `#!/bin/sh\n# Stand-in web server of the conformance images: busybox httpd on port 80.\nexec /bin/httpd -f -p 80 -h ${docRoot}\n`,
  );
  await Deno.chmod(`${root}${program}`, 0o755);
}

async function addNnp(root: string): Promise<void> {
  await ensureDir(`${root}/usr/local/bin`);
  await Deno.copyFile(NNP, `${root}/usr/local/bin/nnp`);
  // Set-uid root, as upstream's image: the spec checks that no_new_privs keeps the uid.
  await Deno.chmod(`${root}/usr/local/bin/nnp`, 0o4755);
}

/** netcat-openbsd, the `nc` of upstream's agnhost image. */
const NETCAT = "/bin/nc.openbsd";

/** The curl stand-in put into agnhost (busybox wget underneath). */
const CURL_SHIM = new URL("./curl_shim.sh", import.meta.url).pathname;

const agnhostDigest = async () =>
  `${await fileSha256Hex(AGNHOST)}:${await fileSha256Hex(CURL_SHIM)}:${await fileSha256Hex(
    NETCAT,
  )}`;
const none = () => Promise.resolve("");

/** Recipes by image name (the reference's last path element). */
const RECIPES: Record<string, Recipe> = {
  agnhost: {
    layer: "agnhost",
    files: addAgnhost,
    inputs: agnhostDigest,
    entrypoint: ["/agnhost"],
    cmd: ["pause"],
  },
  pause: {
    layer: "agnhost",
    files: addAgnhost,
    inputs: agnhostDigest,
    entrypoint: ["/agnhost", "pause"],
  },
  busybox: { layer: "busybox", files: () => Promise.resolve(), inputs: none, cmd: ["sh"] },
  nonroot: {
    layer: "busybox",
    files: () => Promise.resolve(),
    inputs: none,
    cmd: ["sh"],
    user: "1234",
  },
  nonewprivs: {
    layer: "nonewprivs",
    files: addNnp,
    inputs: () => fileSha256Hex(NNP),
    cmd: ["nnp"],
  },
  httpd: {
    layer: "httpd",
    files: (root) =>
      addWebServer(root, "/usr/local/apache2/htdocs", "/usr/local/bin/httpd-foreground"),
    inputs: none,
    cmd: ["httpd-foreground"],
  },
  nginx: {
    layer: "nginx",
    files: (root) => addWebServer(root, "/usr/share/nginx/html", "/usr/sbin/nginx"),
    inputs: none,
    cmd: ["nginx", "-g", "daemon off;"],
  },
};

/** Bumped when the base layout changes, so cached layers are rebuilt. */
const BASE_VERSION = "6";

/** Builds (cached by its inputs) the layer tarball `name`; returns its path and digest of inputs. */
async function buildLayer(name: string, recipe: Recipe): Promise<{ tar: string; key: string }> {
  const busybox = await fileSha256Hex(BUSYBOX);
  const key = sha256Hex([BASE_VERSION, name, busybox, await recipe.inputs()].join("\0"))
    .slice(0, 12);
  await ensureDir(IMAGES_DIR);
  const tar = `${IMAGES_DIR}/${name}-${key}.tar`;
  if (await exists(tar)) return { tar, key };
  const root = `${IMAGES_DIR}/rootfs-${name}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await busyboxRootfs(root, ["usr/bin"], BUSYBOX);
    await Deno.writeTextFile(
      `${root}/etc/passwd`,
      "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    );
    await Deno.writeTextFile(`${root}/etc/group`, "root:x:0:\nnogroup:x:65534:\n");
    await Deno.chmod(`${root}/tmp`, 0o1777);
    await recipe.files(root);
    await run("tar", [
      "--numeric-owner",
      "--owner=0",
      "--group=0",
      "-C",
      root,
      "-cf",
      `${tar}.tmp`,
      ".",
    ]);
    await Deno.rename(`${tar}.tmp`, tar);
  } finally {
    await removeAll(root);
  }
  return { tar, key };
}

/** Imports a layer into the engine as `ref` with the recipe's config (Dockerfile-like changes). */
async function importLayer(
  engine: EngineClient,
  tar: string,
  ref: string,
  recipe: Recipe,
): Promise<void> {
  const q = new URLSearchParams({ fromSrc: "-", repo: ref });
  q.append("changes", `ENV ${PATH_ENV}`);
  if (recipe.entrypoint) q.append("changes", `ENTRYPOINT ${JSON.stringify(recipe.entrypoint)}`);
  if (recipe.cmd) q.append("changes", `CMD ${JSON.stringify(recipe.cmd)}`);
  if (recipe.user) q.append("changes", `USER ${recipe.user}`);
  const res = await engine.request("POST", `/images/create?${q}`, {
    body: await Deno.readFile(tar),
    headers: { "content-type": "application/x-tar" },
  });
  const text = await res.text();
  if (!res.ok || /"error(Detail)?"/.test(text)) {
    throw new Error(`Importing "${ref}" into "${engine.socket}" failed: ${text.trim()}`);
  }
}

function splitRef(ref: string): { repo: string; tag: string; name: string } {
  const colon = ref.lastIndexOf(":");
  const repo = ref.slice(0, colon);
  return { repo, tag: ref.slice(colon + 1), name: repo.slice(repo.lastIndexOf("/") + 1) };
}

/** What {@link provideImages} did. */
export interface ProvidedImages {
  /** References built, pushed and present on the device's engine. */
  provided: string[];
  /** References the suite knows but nothing here builds (tests using them fail to pull). */
  missing: string[];
}

/** Options of {@link provideImages}. */
export interface ProvideOptions {
  /** Every reference the suite may use ({@link listImages}). */
  images: string[];
  /** "host:port" of the local registry. */
  registry: string;
  auth: RegistryAuth;
  /** dockerd's socket: images are built and pushed there. */
  dockerSocket: string;
  /** The device's engine socket; when it is not dockerd, the images are pulled into it. */
  deviceSocket: string;
  log?: (line: string) => void;
}

/**
 * Builds every image of `images` that has a recipe (the framework's private
 * registry's copies excepted), pushes it to the registry and makes sure the
 * device's engine has it.
 */
export async function provideImages(o: ProvideOptions): Promise<ProvidedImages> {
  const log = o.log ?? (() => {});
  const priv = repoList(o.registry).privateRegistry!;
  const wanted = o.images.filter((ref) =>
    ref.startsWith(`${o.registry}/`) && !ref.startsWith(`${priv}/`) &&
    RECIPES[splitRef(ref).name] !== undefined
  );
  const missing = o.images.filter((ref) => !wanted.includes(ref));
  const docker = new EngineClient(o.dockerSocket);
  const device = o.deviceSocket === o.dockerSocket ? undefined : new EngineClient(o.deviceSocket);
  try {
    for (const ref of wanted) {
      const { repo, tag, name } = splitRef(ref);
      const recipe = RECIPES[name]!;
      const { tar, key } = await buildLayer(recipe.layer, recipe);
      // A stable local name per content, so later runs (other registry ports) skip the import.
      const local = `localhost/aranya-conformance/${name}:${tag}-${key}`;
      if (!await docker.hasImage(local)) {
        log(`importing ${local} into dockerd`);
        await importLayer(docker, tar, local, recipe);
      }
      await docker.tag(local, repo, tag);
      const pushed = await docker.push(repo, tag, o.auth);
      if (!pushed.ok) throw new Error(`Pushing "${ref}" failed: ${pushed.error}`);
      if (device) {
        const pulled = await device.pull(repo, tag, o.auth);
        if (!pulled.ok) throw new Error(`Pulling "${ref}" into the device failed: ${pulled.error}`);
      }
      log(`${ref} ready`);
    }
  } finally {
    docker.close();
    device?.close();
  }
  return { provided: wanted, missing };
}
