/**
 * DockerRuntime against the real engines: every case runs against Podman's
 * compatible service and against dockerd (see e2e/services). Containers are
 * labelled `aranya.test=docker-runtime` and removed by that label after each
 * test. Both engines have their default bridge network (dockerd's docker0 on
 * 10.89.0.0/16, Podman's on 10.88.0.0/16).
 */
import assert from "node:assert/strict";
import {
  AlreadyExistsError,
  CanceledError,
  InternalError,
  NotFoundError,
  UnauthenticatedError,
} from "@aranya/common/errors";
import { eventually, uniqueName, useServices } from "@aranya/e2e/fixtures";
import { freePort } from "@aranya/e2e/process";
import { CACHE, ROOT } from "@aranya/e2e/paths";
import {
  EngineClient,
  registryImage,
  type ServiceEndpoints,
  TEST_IMAGE_TAG,
} from "@aranya/e2e/services/mod";
import type { ContainerSpec, OutputChunk } from "../runtime.ts";
import { DockerRuntime } from "./docker_runtime.ts";
import { hijack } from "./hijack.ts";
import { concatBytes } from "@aranya/common/bytes";

const LABEL = "aranya.test";
const LABEL_VALUE = "docker-runtime";
const ENGINES = ["podman", "docker"] as const;
type Engine = typeof ENGINES[number];

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Ctx {
  engine: Engine;
  rt: DockerRuntime;
  e: ServiceEndpoints;
  /** A spec for the test image on network "none" with the cleanup label. */
  spec(overrides: Partial<ContainerSpec>): ContainerSpec;
  /** Creates and starts a container; resolves with its id. */
  run(overrides: Partial<ContainerSpec>): Promise<string>;
}

/** Registers `fn` once per engine, with a runtime and cleanup of every labelled container. */
function engineTest(name: string, fn: (ctx: Ctx) => Promise<void>): void {
  for (const engine of ENGINES) {
    Deno.test(`${engine}: ${name}`, async () => {
      const services = await useServices();
      const e = services.endpoints;
      const rt = new DockerRuntime({
        socket: engine === "docker" ? e.dockerSocket : e.podmanSocket,
      });
      const spec = (o: Partial<ContainerSpec>): ContainerSpec => ({
        name: uniqueName("drt"),
        image: e.testImage,
        network: "none",
        ...o,
        labels: { [LABEL]: LABEL_VALUE, ...o.labels },
      });
      const ctx: Ctx = {
        engine,
        rt,
        e,
        spec,
        run: async (o) => {
          const id = await rt.createContainer(spec(o));
          await rt.startContainer(id);
          return id;
        },
      };
      try {
        await fn(ctx);
      } finally {
        try {
          await removeLabelled(rt);
        } finally {
          rt.close();
          await services.release();
        }
      }
    });
  }
}

/**
 * Removes every container with the test label. Podman refuses to remove a
 * container that others joined (network, ipc, pid) before they are gone, so
 * this goes round until nothing is left.
 */
async function removeLabelled(rt: DockerRuntime): Promise<void> {
  let lastError: unknown;
  for (let round = 0; round < 5; round++) {
    const left = await rt.listContainers({ [LABEL]: LABEL_VALUE });
    if (left.length === 0) return;
    for (const c of left) await rt.removeContainer(c.id).catch((err) => lastError = err);
  }
  throw new Error(`Test containers are left over: ${lastError}`);
}

/** Rejects when `p` takes longer than `ms` (the timer is cleared either way). */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads `s` to its end; stdout and stderr separately. */
async function collect(
  s: ReadableStream<OutputChunk>,
): Promise<{ stdout: string; stderr: string; stdoutBytes: Uint8Array }> {
  const out: Uint8Array[] = [];
  const err: Uint8Array[] = [];
  for await (const c of s) (c.stream === "stdout" ? out : err).push(c.data);
  const stdoutBytes = concatBytes(out);
  return { stdout: dec.decode(stdoutBytes), stderr: dec.decode(concatBytes(err)), stdoutBytes };
}

/** A stream of `chunks`, then its end. */
function streamOf(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]!);
      else c.close();
    },
  });
}

/** Runs a container to completion; its exit code and output. */
async function runToEnd(ctx: Ctx, o: Partial<ContainerSpec>) {
  const id = await ctx.run(o);
  const code = await within(30_000, "waiting for the container", ctx.rt.waitContainer(id));
  const out = await collect(ctx.rt.logs(id, {}));
  return { id, code, ...out };
}

/** Reads chunks until `pred` holds for the stdout text so far. */
async function readUntil(
  reader: ReadableStreamDefaultReader<OutputChunk>,
  pred: (stdout: string) => boolean,
): Promise<string> {
  let text = "";
  while (!pred(text)) {
    const r = await reader.read();
    if (r.done) throw new Error(`Output ended before the expected text; got "${text}"`);
    if (r.value.stream === "stdout") text += dec.decode(r.value.data);
  }
  return text;
}

engineTest("version names the engine", async ({ engine, rt }) => {
  const v = await rt.version();
  assert.equal(v.name, engine);
  assert.match(v.version, /^\d+\.\d+/);
  assert.equal(v.apiVersion, "1.41");
});

engineTest("images: inspect and list", async ({ rt, e }) => {
  const img = await rt.inspectImage(e.testImage);
  assert.ok(img, "the test image is present");
  assert.match(img.id, /^(sha256:)?[0-9a-f]{64}$/);
  assert.ok(img.repoTags.includes(e.testImage), `repoTags: ${img.repoTags}`);
  assert.ok(img.size > 1_000_000, `size ${img.size}`);
  const all = await rt.listImages();
  assert.ok(all.some((i) => i.id === img.id && i.repoTags.includes(e.testImage)));
  assert.equal(await rt.inspectImage("localhost/aranya-e2e/absent:nothing"), undefined);
});

engineTest("pull from the registry with the right credentials", async (ctx) => {
  const { rt, e } = ctx;
  const ref = `${registryImage(e.registry)}:${TEST_IMAGE_TAG}`;
  await rt.removeImage(ref);
  assert.equal(await rt.inspectImage(ref), undefined);
  const img = await rt.pullImage(ref, {
    server: e.registry,
    username: e.registryUser,
    password: e.registryPassword,
  });
  assert.ok(img.repoTags.includes(ref), `repoTags: ${img.repoTags}`);
  assert.equal((await rt.inspectImage(ref))?.id, img.id);
  const r = await runToEnd(ctx, { image: ref, cmd: ["echo", "pulled"] });
  assert.equal(r.stdout, "pulled\n");
});

engineTest("pull refused: wrong credentials, no credentials, missing image", async ({ rt, e }) => {
  const ref = `${registryImage(e.registry)}:${TEST_IMAGE_TAG}`;
  await rt.removeImage(ref);
  const wrong = { server: e.registry, username: e.registryUser, password: "wrong-password" };
  await assert.rejects(rt.pullImage(ref, wrong), (err) => {
    assert.ok(err instanceof UnauthenticatedError, `${err}`);
    assert.ok(err.message.startsWith(`Pulling image "${ref}" failed:`), err.message);
    assert.match(err.message, /unauthorized|authentication required/i);
    return true;
  });
  await assert.rejects(rt.pullImage(ref), UnauthenticatedError);
  assert.equal(await rt.inspectImage(ref), undefined);
  const missing = `${e.registry}/aranya-e2e/absent:${TEST_IMAGE_TAG}`;
  const right = { ...wrong, password: e.registryPassword };
  await assert.rejects(rt.pullImage(missing, right), (err) => {
    assert.ok(err instanceof NotFoundError, `${err}`);
    assert.ok(err.message.includes(`"${missing}"`), err.message);
    return true;
  });
});

engineTest("create, start, inspect, wait, remove", async ({ rt, spec }) => {
  const dir = `${CACHE}/docker-runtime-test/${crypto.randomUUID()}`;
  await Deno.mkdir(dir, { recursive: true });
  try {
    await Deno.writeTextFile(`${dir}/file.txt`, "from-the-host");
    const s = spec({
      entrypoint: ["sh", "-c"],
      cmd: ['echo "$GREETING"; cat /data/file.txt; echo; pwd; echo oops >&2; exit 7'],
      env: { GREETING: "hello env", UNUSED: "x=y" },
      labels: { "drt.purpose": "lifecycle" },
      mounts: [{ hostPath: dir, containerPath: "/data", readOnly: true }],
      workingDir: "/tmp",
    });
    const id = await rt.createContainer(s);
    assert.match(id, /^[0-9a-f]{64}$/);
    const created = await rt.inspectContainer(s.name);
    assert.ok(created);
    assert.equal(created.id, id);
    assert.equal(created.name, s.name);
    assert.equal(created.state, "created");
    assert.equal(created.image, s.image);
    assert.ok(created.imageId.length > 0);
    assert.equal(created.labels["drt.purpose"], "lifecycle");
    assert.equal(created.labels[LABEL], LABEL_VALUE);
    assert.notEqual(created.createdAt, "");
    assert.equal(created.startedAt, "");

    await rt.startContainer(id);
    assert.equal(await within(30_000, "wait", rt.waitContainer(id)), 7);
    const done = await rt.inspectContainer(id);
    assert.ok(done);
    assert.equal(done.state, "exited");
    assert.equal(done.exitCode, 7);
    assert.equal(done.pid, 0);
    assert.notEqual(done.startedAt, "");
    assert.notEqual(done.finishedAt, "");
    const logs = await collect(rt.logs(id, {}));
    assert.equal(logs.stdout, "hello env\nfrom-the-host\n/tmp\n");
    assert.equal(logs.stderr, "oops\n");

    await rt.removeContainer(id);
    assert.equal(await rt.inspectContainer(id), undefined);
    await rt.removeContainer(id); // a missing container is not an error
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

engineTest("an app container joins the infra container's network namespace", async (ctx) => {
  const { rt } = ctx;
  const infra = await ctx.run({ cmd: ["sleep", "300"], network: "none" });
  const nsOf = async (cid: string) => {
    const h = await rt.exec(cid, { cmd: ["readlink", "/proc/self/ns/net"] });
    const out = await collect(h.output);
    assert.equal(await h.exitCode, 0);
    return out.stdout.trim();
  };
  const infraNs = await nsOf(infra);
  assert.match(infraNs, /^net:\[\d+\]$/);
  const app = await runToEnd(ctx, {
    cmd: ["readlink", "/proc/self/ns/net"],
    network: `container:${infra}`,
  });
  assert.equal(app.code, 0);
  assert.equal(app.stdout.trim(), infraNs, "the app shares the infra's network namespace");
  const other = await runToEnd(ctx, { cmd: ["readlink", "/proc/self/ns/net"], network: "none" });
  assert.notEqual(other.stdout.trim(), infraNs, "a separate container has its own namespace");
});

engineTest("spec mapping: user, hostname, rootfs, capabilities, limits, dns", async (ctx) => {
  const script = [
    "id -u; id -g; hostname",
    "grep -c 10.1.2.3.*drt-extra /etc/hosts",
    "touch /rootfs-write 2>/dev/null && echo rootfs-writable || echo rootfs-read-only",
    "grep CapBnd /proc/self/status",
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
  ].join("; ");
  const r = await runToEnd(ctx, {
    cmd: ["sh", "-c", script],
    user: "1234:2345",
    hostname: "drt-host",
    extraHosts: ["drt-extra:10.1.2.3"],
    readOnlyRootfs: true,
    capDrop: ["ALL"],
    capAdd: ["NET_ADMIN"],
    memoryLimitBytes: 64 * 1024 * 1024,
    cpuLimitMillis: 250,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.split("\n"), [
    "1234",
    "2345",
    "drt-host",
    "1",
    "rootfs-read-only",
    "CapBnd:\t0000000000001000", // NET_ADMIN (bit 12) only
    String(64 * 1024 * 1024),
    "25000", // 250 millicores = 25 ms per 100 ms CFS period
    "",
  ]);

  // As root the effective set is exactly the one capability added to an empty set.
  const root = await runToEnd(ctx, {
    cmd: ["grep", "CapEff", "/proc/self/status"],
    capDrop: ["ALL"],
    capAdd: ["NET_ADMIN"],
  });
  assert.match(root.stdout, /^CapEff:\s+0+1000\n$/);

  // Privileged: every capability. dockerd asks runc for the full set, which
  // fails where the engine's own bounding set lacks one (this sandbox lacks
  // CAP_SYS_RESOURCE; Podman only grants what it has). A non-privileged
  // container starts fine, so that failure too shows the flag reached runc.
  try {
    const privileged = await runToEnd(ctx, {
      cmd: ["grep", "CapEff", "/proc/self/status"],
      privileged: true,
    });
    const eff = BigInt("0x" + /CapEff:\s+([0-9a-f]+)/.exec(privileged.stdout)![1]);
    assert.ok(eff >= 0xfeffffffn, `CapEff ${eff.toString(16)}`);
  } catch (err) {
    assert.equal(ctx.engine, "docker", `${err}`);
    assert.ok(err instanceof InternalError && /unable to apply caps/.test(err.message), `${err}`);
  }

  // DNS settings. Podman writes no resolv.conf at all with network "none", hence "host".
  const dns = await runToEnd(ctx, {
    cmd: ["grep", "-E", "^(nameserver|search|options)", "/etc/resolv.conf"],
    network: "host",
    dnsServers: ["10.0.0.53"],
    dnsSearches: ["example.test"],
    dnsOptions: ["ndots:2"],
  });
  assert.deepEqual(dns.stdout.trim().split("\n").sort(), [
    "nameserver 10.0.0.53",
    "options ndots:2",
    "search example.test",
  ]);
});

engineTest("published ports", async (ctx) => {
  const port = freePort();
  const network = "bridge";
  const id = await ctx.run({
    cmd: ["sh", "-c", "echo hi-port | nc -l -p 8080"],
    network,
    ports: [{ containerPort: 8080, protocol: "tcp", hostPort: port, hostIp: "127.0.0.1" }],
  });
  const client = new EngineClient(
    ctx.engine === "docker" ? ctx.e.dockerSocket : ctx.e.podmanSocket,
  );
  try {
    const raw = await client.call("GET", `/containers/${id}/json`) as {
      HostConfig: { PortBindings: unknown };
      Config: { ExposedPorts: unknown };
    };
    assert.deepEqual(raw.HostConfig.PortBindings, {
      "8080/tcp": [{ HostIp: "127.0.0.1", HostPort: String(port) }],
    });
    assert.deepEqual(Object.keys(raw.Config.ExposedPorts as object), ["8080/tcp"]);
  } finally {
    client.close();
  }
  const info = await ctx.rt.inspectContainer(id);
  assert.match(info?.ipAddress ?? "", /^\d+\.\d+\.\d+\.\d+$/, "a bridge address");
  const got = await eventually("the published port", async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const text = dec.decode(await new Response(conn.readable).arrayBuffer());
      return text === "" ? undefined : text;
    } finally {
      try {
        conn.close();
      } catch { /* reading to the end closed it */ }
    }
  }, 10_000);
  assert.equal(got, "hi-port\n");
});

engineTest("ipc and pid namespaces shared with another container", async (ctx) => {
  const script = "readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid";
  const infra = await ctx.run({ cmd: ["sleep", "300"], ipcMode: "shareable" });
  const h = await ctx.rt.exec(infra, { cmd: ["sh", "-c", script] });
  const infraNs = (await collect(h.output)).stdout;
  assert.equal(await h.exitCode, 0);
  assert.match(infraNs, /^ipc:\[\d+\]\npid:\[\d+\]\n$/);
  const app = await runToEnd(ctx, {
    cmd: ["sh", "-c", `${script}; ps -o comm | grep -c sleep`],
    ipcMode: `container:${infra}`,
    pidMode: `container:${infra}`,
  });
  assert.equal(app.stdout, `${infraNs}1\n`, "same namespaces; the infra's sleep is visible");
});

engineTest("logs: follow, tail, timestamps, since, stdout vs stderr", async (ctx) => {
  const { rt } = ctx;
  const id = await ctx.run({
    cmd: [
      "sh",
      "-c",
      "echo out1; echo err1 >&2; sleep 2; echo out2; echo err2 >&2; sleep 0.5; echo out3",
    ],
  });
  // Follow from the start: ends by itself when the container exits.
  const followed = await within(30_000, "following logs", collect(rt.logs(id, { follow: true })));
  assert.equal(followed.stdout, "out1\nout2\nout3\n");
  assert.equal(followed.stderr, "err1\nerr2\n");
  assert.equal(await rt.waitContainer(id), 0);

  const tail = await collect(rt.logs(id, { tail: 1 }));
  assert.equal(tail.stdout + tail.stderr, "out3\n");

  const stamped = await collect(rt.logs(id, { timestamps: true }));
  const lines = stamped.stdout.trim().split("\n");
  assert.equal(lines.length, 3);
  for (const [i, line] of lines.entries()) {
    assert.match(
      line,
      new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?\\S* out${i + 1}$`),
    );
  }
  const out2At = Date.parse(lines[1]!.split(" ")[0]!) / 1000;
  const since = await collect(rt.logs(id, { since: Math.floor(out2At) }));
  assert.equal(since.stdout, "out2\nout3\n");
  assert.equal(since.stderr, "err2\n");

  const onlyStdout = await collect(rt.logs(id, { stderr: false }));
  assert.equal(onlyStdout.stdout, "out1\nout2\nout3\n");
  assert.equal(onlyStdout.stderr, "");
  const onlyStderr = await collect(rt.logs(id, { stdout: false }));
  assert.equal(onlyStderr.stdout, "");
  assert.equal(onlyStderr.stderr, "err1\nerr2\n");

  await assert.rejects(collect(rt.logs("drt-absent-container", {})), NotFoundError);

  // With a tty the log is one raw stream: no frames, stderr arrives as stdout.
  const tty = await runToEnd(ctx, {
    cmd: ["sh", "-c", "echo tty-out; echo tty-err >&2"],
    tty: true,
  });
  assert.equal(tty.code, 0);
  assert.equal(tty.stdout, "tty-out\r\ntty-err\r\n");
  assert.equal(tty.stderr, "");
});

engineTest("logs: canceling or aborting a follow releases the request", async (ctx) => {
  const { rt } = ctx;
  const id = await ctx.run({ cmd: ["sh", "-c", "echo started; sleep 300"] });
  const first = rt.logs(id, { follow: true }).getReader();
  assert.equal(await readUntil(first, (t) => t.includes("started")), "started\n");
  await first.cancel();

  const ac = new AbortController();
  const second = rt.logs(id, { follow: true, signal: ac.signal }).getReader();
  await readUntil(second, (t) => t.includes("started"));
  const pending = second.read();
  ac.abort();
  await assert.rejects(pending, CanceledError);
  // The sanitizers check that neither HTTP body is left open.
});

engineTest("exec without stdin: output and exit code", async (ctx) => {
  const id = await ctx.run({ cmd: ["sleep", "300"] });
  const h = await ctx.rt.exec(id, {
    cmd: ["sh", "-c", 'echo "out $FOO $(pwd)"; echo err >&2; exit 3'],
    env: { FOO: "bar" },
    workingDir: "/tmp",
  });
  const out = await within(30_000, "exec output", collect(h.output));
  assert.equal(out.stdout, "out bar /tmp\n");
  assert.equal(out.stderr, "err\n");
  assert.equal(await h.exitCode, 3);

  await assert.rejects(
    ctx.rt.exec("drt-absent-container", { cmd: ["true"] }),
    NotFoundError,
  );
});

engineTest(
  "exec: canceled output still yields the exit code; close and abort cancel",
  async (ctx) => {
    const id = await ctx.run({ cmd: ["sleep", "300"] });
    const h = await ctx.rt.exec(id, { cmd: ["sh", "-c", "echo a; sleep 0.3; echo b; exit 5"] });
    await h.output.cancel();
    assert.equal(await within(30_000, "exit code", h.exitCode), 5);

    const h2 = await ctx.rt.exec(id, { cmd: ["sh", "-c", "echo started; sleep 300"] });
    const reader = h2.output.getReader();
    await readUntil(reader, (t) => t.includes("started"));
    h2.close();
    await assert.rejects(h2.exitCode, CanceledError);
    while (!(await reader.read()).done) { /* ends after close */ }

    const ac = new AbortController();
    const h3 = await ctx.rt.exec(id, {
      cmd: ["sh", "-c", "echo started; sleep 300"],
      signal: ac.signal,
    });
    const reader3 = h3.output.getReader();
    await readUntil(reader3, (t) => t.includes("started"));
    ac.abort();
    await assert.rejects(h3.exitCode, CanceledError);
    while (!(await reader3.read()).done) { /* ends after the abort */ }
    await assert.rejects(
      ctx.rt.exec(id, { cmd: ["true"], signal: ac.signal }),
      CanceledError,
    );
  },
);

engineTest("exec sessions leave no engine process behind once they ended", async (ctx) => {
  const id = await ctx.run({ cmd: ["sleep", "300"] });
  /** Processes of the engine for this container besides its own: exec sessions' conmons. */
  const lingering = async () => {
    const out = await new Deno.Command("ps", { args: ["-eo", "args"], stdout: "piped" }).output();
    const lines = dec.decode(out.stdout).split("\n").filter((l) => l.includes(id));
    // Podman: the container's own conmon has no --exec flag; dockerd: exec shims are not
    // separate processes per session.
    return lines.filter((l) => /conmon/.test(l) && /--exec/.test(l)).length;
  };
  for (let i = 0; i < 5; i++) {
    const h = await ctx.rt.exec(id, {
      cmd: i % 2 ? ["cat"] : ["true"],
      stdin: i % 2 ? streamOf([enc.encode("x")]) : undefined,
    });
    await within(30_000, "exec output", collect(h.output));
    assert.equal(await h.exitCode, 0);
  }
  // Podman keeps an API exec session's conmon for `exit_command_delay` after it ended (the test
  // engine sets 10 s; see e2e/services/podman.ts and docs/arhat.md): then nothing is left.
  await eventually(
    "the exec sessions' processes to end",
    async () => await lingering() === 0 || undefined,
    30_000,
  );
});

engineTest("exec with stdin: 1 MB round-trips through cat", async (ctx) => {
  const id = await ctx.run({ cmd: ["sleep", "300"] });
  const data = new Uint8Array(1 << 20);
  for (let off = 0; off < data.length; off += 65_536) {
    crypto.getRandomValues(data.subarray(off, off + 65_536));
  }
  const chunks: Uint8Array[] = [];
  for (let off = 0; off < data.length; off += 50_000) chunks.push(data.slice(off, off + 50_000));
  const h = await ctx.rt.exec(id, { cmd: ["cat"], stdin: streamOf(chunks) });
  const out = await within(60_000, "exec output", collect(h.output));
  assert.equal(out.stdoutBytes.length, data.length);
  assert.deepEqual(out.stdoutBytes, data);
  assert.equal(out.stderr, "");
  assert.equal(await h.exitCode, 0);

  // Text in, transformed text out, and the exit code of the process.
  const h2 = await ctx.rt.exec(id, {
    cmd: ["sh", "-c", "read x; echo got:$x; echo oops >&2; exit 4"],
    stdin: streamOf([enc.encode("hello-from-deno\n")]),
  });
  const out2 = await collect(h2.output);
  assert.equal(out2.stdout, "got:hello-from-deno\n");
  assert.equal(out2.stderr, "oops\n");
  assert.equal(await h2.exitCode, 4);
});

engineTest("exec with a tty: output arrives and resize works", async (ctx) => {
  const id = await ctx.run({ cmd: ["sleep", "300"] });
  const h = await ctx.rt.exec(id, {
    cmd: ["sh", "-c", "echo tty-ok; sleep 1; stty size; echo err-on-tty >&2"],
    tty: true,
  });
  const reader = h.output.getReader();
  await readUntil(reader, (t) => t.includes("tty-ok"));
  await h.resize(100, 40);
  const rest = await readUntil(reader, (t) => t.includes("err-on-tty"));
  // With a tty everything is one raw stream: stderr arrives as stdout, lines end in \r\n.
  assert.match(rest, /40 100\r\n/);
  assert.match(rest, /err-on-tty\r\n/);
  while (!(await reader.read()).done) { /* drain */ }
  assert.equal(await h.exitCode, 0);
});

engineTest("attach: stdin to a container running cat, and close", async (ctx) => {
  const { rt } = ctx;
  const id = await ctx.run({ cmd: ["cat"], openStdin: true, stdinOnce: true });
  const h = await rt.attach(id, {
    stdin: streamOf([enc.encode("line1\n"), enc.encode("line2\n")]),
  });
  const out = await within(30_000, "attach output", collect(h.output));
  assert.equal(out.stdout, "line1\nline2\n");
  // stdinOnce: the end of the attach's stdin closes cat's stdin, so the container exits 0.
  assert.equal(await within(30_000, "attach exit code", h.exitCode), 0);
  assert.equal((await rt.inspectContainer(id))?.state, "exited");

  const ticker = await ctx.run({
    cmd: ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
  });
  const h2 = await rt.attach(ticker, {});
  const reader = h2.output.getReader();
  await readUntil(reader, (t) => t.includes("tick"));
  h2.close();
  await assert.rejects(h2.exitCode, CanceledError);
  while (!(await reader.read()).done) { /* ends after close */ }
  assert.equal((await rt.inspectContainer(ticker))?.state, "running", "close does not stop it");

  // A tty container: raw output (the terminal echoes the input, then cat repeats it).
  const ttyCat = await ctx.run({ cmd: ["cat"], tty: true, openStdin: true });
  const input = new TransformStream<Uint8Array, Uint8Array>();
  const h3 = await rt.attach(ttyCat, { stdin: input.readable });
  await rt.resizeContainer(ttyCat, 120, 30);
  await h3.resize(100, 40);
  const writer = input.writable.getWriter();
  await writer.write(enc.encode("typed\n"));
  const reader3 = h3.output.getReader();
  const echoed = await readUntil(reader3, (t) => t.split("typed").length >= 3);
  assert.equal(echoed, "typed\r\ntyped\r\n");
  h3.close();
  await writer.close().catch(() => {}); // the attach canceled its end of the stream on close
  while (!(await reader3.read()).done) { /* ends after close */ }
});

engineTest("stop: TERM within the grace period, KILL after it", async (ctx) => {
  const { rt } = ctx;
  const polite = await ctx.run({
    cmd: [
      "sh",
      "-c",
      'trap "echo got-term; exit 0" TERM; echo ready; while true; do sleep 0.1; done',
    ],
  });
  const stubborn = await ctx.run({
    cmd: ["sh", "-c", 'trap "" TERM; echo ready; while true; do sleep 0.1; done'],
  });
  for (const id of [polite, stubborn]) {
    const r = rt.logs(id, { follow: true }).getReader();
    await within(10_000, "ready", readUntil(r, (t) => t.includes("ready")));
    await r.cancel();
  }

  const ac = new AbortController();
  const waiting = rt.waitContainer(polite, ac.signal);
  ac.abort();
  await assert.rejects(waiting, CanceledError);

  let t0 = Date.now();
  await rt.stopContainer(polite, 20);
  assert.ok(Date.now() - t0 < 10_000, `the trapping container stopped in ${Date.now() - t0} ms`);
  const p = await rt.inspectContainer(polite);
  assert.equal(p?.state, "exited");
  assert.equal(p?.exitCode, 0);
  assert.match((await collect(rt.logs(polite, {}))).stdout, /got-term/);

  t0 = Date.now();
  await rt.stopContainer(stubborn, 2);
  const took = Date.now() - t0;
  assert.ok(
    took >= 1_500 && took < 15_000,
    `the TERM-ignoring container was killed after ${took} ms`,
  );
  const s = await rt.inspectContainer(stubborn);
  assert.equal(s?.state, "exited");
  assert.equal(s?.exitCode, 137);

  await rt.stopContainer(stubborn, 1); // stopping a stopped container is not an error
  await assert.rejects(rt.stopContainer("drt-absent-container", 1), NotFoundError);
});

engineTest("listContainers filters by labels", async (ctx) => {
  const { rt, spec } = ctx;
  const group = crypto.randomUUID();
  const a = await rt.createContainer(spec({
    cmd: ["true"],
    labels: { "drt.group": group, "drt.role": "a" },
  }));
  const b = await rt.createContainer(spec({
    cmd: ["true"],
    labels: { "drt.group": group, "drt.role": "b" },
  }));
  const ids = (labels: Record<string, string>) =>
    rt.listContainers(labels).then((cs) => cs.map((c) => c.id).sort());
  assert.deepEqual(await ids({ "drt.group": group }), [a, b].sort());
  assert.deepEqual(await ids({ "drt.group": group, "drt.role": "a" }), [a]);
  assert.deepEqual(await ids({ "drt.group": group, "drt.role": "c" }), []);
  const everything = (await rt.listContainers()).map((c) => c.id);
  assert.ok(everything.includes(a) && everything.includes(b), "no labels: all containers");
  const [info] = await rt.listContainers({ "drt.group": group, "drt.role": "b" });
  assert.equal(info?.state, "created");
  assert.equal(info?.labels["drt.role"], "b");
});

engineTest("errors: missing containers and a taken name", async (ctx) => {
  const { rt, spec } = ctx;
  assert.equal(await rt.inspectContainer("drt-absent-container"), undefined);
  await assert.rejects(rt.startContainer("drt-absent-container"), (err) => {
    assert.ok(err instanceof NotFoundError, `${err}`);
    assert.ok(err.message.startsWith('Starting container "drt-absent-container" failed:'));
    return true;
  });
  await assert.rejects(rt.waitContainer("drt-absent-container"), NotFoundError);
  const s = spec({ cmd: ["true"] });
  await rt.createContainer(s);
  await assert.rejects(rt.createContainer(s), (err) => {
    assert.ok(err instanceof AlreadyExistsError, `${err}`);
    assert.ok(err.message.startsWith(`Creating container "${s.name}" failed:`), err.message);
    return true;
  });
  await assert.rejects(
    rt.createContainer(spec({ image: "localhost/aranya-e2e/absent:nothing" })),
    NotFoundError,
  );
  // A refused upgrade carries the engine's own message.
  const socket = ctx.engine === "docker" ? ctx.e.dockerSocket : ctx.e.podmanSocket;
  await assert.rejects(
    hijack({
      socket,
      method: "POST",
      path: "/v1.41/exec/drt-absent-exec/start",
      body: { Detach: false, Tty: false },
      what: 'Starting exec "drt-absent-exec"',
    }),
    (err) => {
      assert.ok(err instanceof NotFoundError, `${err}`);
      assert.match(err.message, /^Starting exec "drt-absent-exec" failed: .*no such exec/i);
      return true;
    },
  );
});

Deno.test("an unreachable engine socket is UnavailableError", async () => {
  // The test permission set only allows the two live engine sockets, so the
  // runtime runs in a child process granted exactly the missing socket's path.
  const dir = `${CACHE}/docker-runtime-test`;
  await Deno.mkdir(dir, { recursive: true });
  const missing = `${dir}/missing-${crypto.randomUUID()}.sock`;
  const notASocket = `${dir}/plain-file-${crypto.randomUUID()}.sock`;
  await Deno.writeTextFile(notASocket, "");
  try {
    for (const socket of [missing, notASocket]) {
      const out = await new Deno.Command("deno", {
        args: [
          "run",
          "--no-prompt",
          `--allow-read=${ROOT},${socket}`,
          `--allow-write=${socket}`,
          `--allow-net=d,unix:${socket}`,
          new URL("./testdata/unreachable_engine.ts", import.meta.url).pathname,
          socket,
        ],
        cwd: ROOT,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, dec.decode(out.stderr));
      const result = JSON.parse(dec.decode(out.stdout)) as Record<
        string,
        { name: string; message: string }
      >;
      for (const [call, r] of Object.entries(result)) {
        assert.equal(r.name, "UnavailableError", `${call} on ${socket}: ${r.name}: ${r.message}`);
        assert.ok(r.message.includes(`"${socket}"`), r.message);
      }
    }
  } finally {
    await Deno.remove(notASocket);
  }
});
