/** Ssh2RemoteHost against a real OpenSSH server (e2e/services/sshd.ts). */
import assert from "node:assert/strict";
import {
  CanceledError,
  InvalidInputError,
  NotFoundError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
} from "@aranya/common/errors";
import { childPids, type SshServer, startSshd } from "@aranya/e2e/services/sshd";
import { freePort } from "@aranya/e2e/process";
import { connectSsh, type SshTarget } from "./ssh_remote_host.ts";
import type { RemoteHost } from "./remote_host.ts";
import { fileSha256Hex } from "@aranya/common/digest";

const MB = 1024 * 1024;

function target(sshd: SshServer, more: Partial<SshTarget> = {}): SshTarget {
  return {
    host: sshd.address,
    port: sshd.port,
    user: sshd.user,
    privateKeyFile: sshd.clientKeyFile,
    knownHostsFile: sshd.knownHostsFile,
    ...more,
  };
}

/** Writes `size` random bytes to `path` in 1 MiB pieces. */
async function randomFile(path: string, size: number): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const chunk = new Uint8Array(MB);
    for (let left = size; left > 0; left -= chunk.length) {
      for (let i = 0; i < chunk.length; i += 65536) {
        crypto.getRandomValues(chunk.subarray(i, i + 65536));
      }
      const piece = chunk.subarray(0, Math.min(left, chunk.length));
      for (let off = 0; off < piece.length;) off += await f.write(piece.subarray(off));
    }
  } finally {
    f.close();
  }
}

async function rejectsWith(
  p: Promise<unknown>,
  cls: new (...args: never[]) => Error,
  ...patterns: (string | RegExp)[]
): Promise<Error> {
  const err = await p.then(
    (v) => assert.fail(`expected a ${cls.name}, got ${JSON.stringify(v)}`),
    (e: unknown) => e as Error,
  );
  assert.ok(err instanceof cls, `expected a ${cls.name}, got ${err.name}: ${err.message}`);
  for (const pat of patterns) {
    if (typeof pat === "string") {
      assert.ok(err.message.includes(pat), `"${err.message}" has "${pat}"`);
    } else assert.match(err.message, pat);
  }
  return err;
}

Deno.test({
  name: "Ssh2RemoteHost against a real sshd",
  fn: async (t) => {
    await Deno.mkdir("/tmp/aranya-e2e", { recursive: true });
    const work = await Deno.makeTempDir({ dir: "/tmp/aranya-e2e", prefix: "ssh-test-" });
    // Three host keys: ssh2 prefers ed25519, so only negotiating by what is known works.
    const sshd = await startSshd({ extraHostKeys: ["ecdsa", "rsa"] });
    const address = `127.0.0.1:${sshd.port}`;
    let host: RemoteHost | undefined;
    try {
      host = await connectSsh(target(sshd));
      const h = host;
      assert.equal(h.label, `root@${address}`);

      await t.step("exec returns output and exit codes", async () => {
        assert.deepEqual(await h.exec("sh -c 'echo out; echo err >&2; exit 3'"), {
          code: 3,
          stdout: "out\n",
          stderr: "err\n",
        });
        assert.deepEqual(await h.exec("true"), { code: 0, stdout: "", stderr: "" });
        assert.equal((await h.exec("printf 'h\\303\\251 \\342\\234\\223'")).stdout, "hé ✓");
        assert.equal((await h.exec("no-such-command-here")).code, 127);
      });

      await t.step("a command killed by a signal reports 128+n", async () => {
        const r = await h.exec("sh -c 'kill -TERM $$'");
        assert.equal(r.code, 128 + 15);
      });

      await t.step("stdin is written then closed", async () => {
        const text = "line 1\nünïcödé ✓\n";
        const r = await h.exec("cat", { stdin: new TextEncoder().encode(text) });
        assert.deepEqual(r, { code: 0, stdout: text, stderr: "" });
        const big = new Uint8Array(3 * MB).fill(97);
        assert.equal((await h.exec("wc -c", { stdin: big })).stdout.trim(), String(3 * MB));
        // Without stdin the command sees end of input at once.
        assert.equal((await h.exec("cat; echo done")).stdout, "done\n");
      });

      await t.step("execs run concurrently on one connection", async () => {
        const rs = await Promise.all(
          [1, 2, 3, 4, 5].map((i) => h.exec(`sleep 0.2; echo ${i}`)),
        );
        assert.deepEqual(rs.map((r) => r.stdout.trim()), ["1", "2", "3", "4", "5"]);
      });

      await t.step("an aborted exec rejects at once with CanceledError", async () => {
        const start = Date.now();
        // OpenSSH refuses signal requests in root sessions ("session signalling
        // requires privilege separation"), so this sleep runs on until sshd stops.
        await rejectsWith(
          h.exec("sleep 8", { signal: AbortSignal.timeout(300) }),
          CanceledError,
          "sleep 8",
        );
        // Rejected at the abort, not when the command ended (8 s).
        assert.ok(Date.now() - start < 6_000, `took ${Date.now() - start} ms`);
        await rejectsWith(
          h.exec("echo never", { signal: AbortSignal.abort() }),
          CanceledError,
          "echo never",
        );
        assert.equal((await h.exec("echo still-usable")).stdout, "still-usable\n");
      });

      await t.step("upload of a 20 MB file arrives intact with its mode", async () => {
        const local = `${work}/payload.bin`;
        const remote = `${work}/uploaded.bin`;
        await randomFile(local, 20 * MB);
        const start = performance.now();
        await h.upload(local, remote, 0o755);
        const secs = (performance.now() - start) / 1000;
        console.log(`    20 MB upload: ${(20 / secs).toFixed(1)} MB/s`);
        const r = await h.exec(`sha256sum ${remote} && stat -c %a ${remote}`);
        assert.equal(r.code, 0, r.stderr);
        const [sum, mode] = r.stdout.trim().split("\n");
        assert.equal(sum?.split(" ")[0], await fileSha256Hex(local));
        assert.equal(mode, "755");
        // Again over an existing file: truncated and its mode set again.
        await Deno.writeTextFile(local, "short\n");
        await h.upload(local, remote, 0o700);
        const again = await h.exec(`cat ${remote}; stat -c %a ${remote}`);
        assert.equal(again.stdout, "short\n700\n");
      });

      await t.step("upload errors name both paths", async () => {
        const local = `${work}/payload.bin`;
        await rejectsWith(
          h.upload(local, `${work}/no/such/folder/x.bin`, 0o644),
          NotFoundError,
          `"${local}"`,
          `"${work}/no/such/folder/x.bin"`,
          `"${work}/no/such/folder"`,
        );
        await rejectsWith(
          h.upload(`${work}/missing.bin`, `${work}/x.bin`, 0o644),
          NotFoundError,
          `"${work}/missing.bin"`,
          `"${work}/x.bin"`,
        );
      });

      await t.step("writeFile writes the data with mode 0600, also over a 0644 file", async () => {
        const remote = `${work}/token`;
        await Deno.writeTextFile(remote, "old contents that are longer\n", { mode: 0o644 });
        await Deno.chmod(remote, 0o644);
        await h.writeFile(remote, new TextEncoder().encode("s3cret\n"), 0o600);
        const r = await h.exec(`stat -c %a ${remote}; cat ${remote}`);
        assert.equal(r.stdout, "600\ns3cret\n");
        const big = new Uint8Array(200 * 1024).map((_, i) => i % 251);
        await h.writeFile(`${work}/big`, big, 0o640);
        assert.deepEqual(await Deno.readFile(`${work}/big`), big);
        assert.equal((await h.exec(`stat -c %a ${work}/big`)).stdout, "640\n");
      });

      await t.step("a wrong client key is refused with a clear message", async () => {
        await rejectsWith(
          connectSsh(target(sshd, { privateKeyFile: sshd.wrongKeyFile })),
          UnauthenticatedError,
          `"${address}"`,
          `user "root"`,
          `"${sshd.wrongKeyFile}"`,
        );
      });

      await t.step("an unreadable key file is named", async () => {
        await rejectsWith(
          connectSsh(target(sshd, { privateKeyFile: `${work}/no-key` })),
          InvalidInputError,
          `"${work}/no-key"`,
          `"${address}"`,
        );
        await Deno.writeTextFile(`${work}/not-a-key`, "hello\n");
        await rejectsWith(
          connectSsh(target(sshd, { privateKeyFile: `${work}/not-a-key` })),
          InvalidInputError,
          `"${work}/not-a-key"`,
        );
      });

      await t.step("an unknown host key is refused with how to add it", async () => {
        const empty = `${work}/known_hosts_empty`;
        await Deno.writeTextFile(empty, "");
        const err = await rejectsWith(
          connectSsh(target(sshd, { knownHostsFile: empty })),
          UnauthenticatedError,
          `Host key of "${address}" (${sshd.hostKeyFingerprint}) is not in "${empty}"`,
          `ssh-keyscan -p ${sshd.port} 127.0.0.1 >> ${empty}, or set hostKey`,
        );
        console.log(`    ${err.message}`);
        await rejectsWith(
          connectSsh(target(sshd, { knownHostsFile: `${work}/missing_known_hosts` })),
          UnauthenticatedError,
          "(the file does not exist)",
        );
      });

      await t.step("a changed host key is refused with both fingerprints", async () => {
        const other = (await Deno.readTextFile(`${sshd.wrongKeyFile}.pub`)).trim();
        const otherFp = (await new Deno.Command("ssh-keygen", {
          args: ["-l", "-f", `${sshd.wrongKeyFile}.pub`],
          stdout: "piped",
        }).output()).stdout;
        const otherFingerprint = new TextDecoder().decode(otherFp).split(" ")[1]!;
        const err = await rejectsWith(
          connectSsh(target(sshd, { knownHostsFile: undefined, hostKey: other })),
          UnauthenticatedError,
          `Host key of "${address}" is ${sshd.hostKeyFingerprint}`,
          `hostKey expects ${otherFingerprint}`,
        );
        console.log(`    ${err.message}`);
        const changed = `${work}/known_hosts_changed`;
        await Deno.writeTextFile(changed, `[127.0.0.1]:${sshd.port} ${other}\n`);
        await rejectsWith(
          connectSsh(target(sshd, { knownHostsFile: changed })),
          UnauthenticatedError,
          `(${sshd.hostKeyFingerprint}) does not match the key in "${changed}" ` +
            `(${otherFingerprint})`,
          `ssh-keygen -R "[127.0.0.1]:${sshd.port}" -f ${changed}`,
        );
      });

      await t.step("a revoked host key is refused", async () => {
        const revoked = `${work}/known_hosts_revoked`;
        await Deno.writeTextFile(
          revoked,
          `[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}\n@revoked * ${sshd.hostPublicKey}\n`,
        );
        await rejectsWith(
          connectSsh(target(sshd, { knownHostsFile: revoked })),
          UnauthenticatedError,
          "@revoked",
          "line 2",
        );
      });

      await t.step("hostKey is accepted as a key line or as a SHA256 fingerprint", async () => {
        for (const hostKey of [sshd.hostPublicKey, sshd.hostKeyFingerprint]) {
          const other = await connectSsh(target(sshd, { knownHostsFile: undefined, hostKey }));
          try {
            assert.equal((await other.exec("echo ok")).stdout, "ok\n");
          } finally {
            await other.close();
          }
        }
        await rejectsWith(
          connectSsh(target(sshd, { hostKey: "SHA1:abc" })),
          InvalidInputError,
          `"SHA1:abc"`,
        );
      });

      await t.step("the host key type known for the device is the one negotiated", async () => {
        for (const line of sshd.extraHostPublicKeys) {
          const file = `${work}/known_hosts_${line.split(" ")[0]}`;
          await Deno.writeTextFile(file, `[127.0.0.1]:${sshd.port} ${line}\n`);
          for (
            const o of [{ knownHostsFile: file }, { knownHostsFile: undefined, hostKey: line }]
          ) {
            const other = await connectSsh(target(sshd, o));
            await other.close();
          }
        }
      });

      await t.step("a refused connection fails quickly and names the address", async () => {
        const port = freePort();
        const start = Date.now();
        await rejectsWith(
          connectSsh(target(sshd, { port })),
          UnavailableError,
          `"127.0.0.1:${port}"`,
          "connection refused",
        );
        assert.ok(Date.now() - start < 2_000, `took ${Date.now() - start} ms`);
      });

      await t.step("a silent server times out with the address and seconds", async () => {
        const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const port = (listener.addr as Deno.NetAddr).port;
        const conns: Deno.Conn[] = [];
        const accepting = (async () => {
          for await (const c of listener) conns.push(c);
        })();
        try {
          const start = Date.now();
          await rejectsWith(
            connectSsh(target(sshd, { port, timeoutMs: 500 })),
            TimeoutError,
            `"127.0.0.1:${port}"`,
            "0.5 s",
          );
          assert.ok(Date.now() - start < 3_000);
        } finally {
          listener.close();
          for (const c of conns) c.close();
          await accepting.catch(() => {});
        }
      });

      await t.step("an aborted connect rejects with CanceledError", async () => {
        await rejectsWith(
          connectSsh(target(sshd), AbortSignal.abort()),
          CanceledError,
          `"${address}"`,
        );
      });

      await t.step("close is idempotent and later calls reject", async () => {
        const other = await connectSsh(target(sshd));
        await other.close();
        await other.close();
        await rejectsWith(other.exec("true"), UnavailableError, `"root@${address}"`);
      });

      await t.step("pending calls reject when the server goes away", async () => {
        const before = childPids(sshd.pid);
        const other = await connectSsh(target(sshd));
        const mine = childPids(sshd.pid).filter((p) => !before.includes(p));
        assert.equal(mine.length, 1, "one sshd serves the new connection");
        const pending = rejectsWith(other.exec("sleep 2.5"), UnavailableError, `"root@${address}"`);
        await new Promise((r) => setTimeout(r, 300));
        await new Deno.Command("kill", { args: ["-KILL", String(mine[0])] }).output();
        await pending;
        await other.close();
      });

      await t.step("an upload of 100 MB streams (the file is not read into memory)", async () => {
        const local = `${work}/big.bin`;
        const remote = `${work}/big-uploaded.bin`;
        await randomFile(local, 100 * MB);
        const rssBefore = Deno.memoryUsage().rss;
        let rssPeak = rssBefore;
        const sampler = setInterval(() => {
          rssPeak = Math.max(rssPeak, Deno.memoryUsage().rss);
        }, 50);
        try {
          await h.upload(local, remote, 0o644);
        } finally {
          clearInterval(sampler);
        }
        assert.equal((await Deno.stat(remote)).size, 100 * MB);
        assert.ok(
          rssPeak - rssBefore < 60 * MB,
          `RSS grew ${((rssPeak - rssBefore) / MB).toFixed(0)} MB during the upload`,
        );
        await Deno.remove(local);
        await Deno.remove(remote);
      });
    } finally {
      await host?.close();
      await sshd.stop();
      await Deno.remove(work, { recursive: true });
    }
  },
});
