/** The private sshd starts, lets the client key in as root, and stops without leftovers. */
import assert from "node:assert/strict";
import { connectSsh } from "@aranya/ops/deploy/ssh_remote_host";
import { exists } from "../paths.ts";
import { isAlive } from "../process.ts";
import { childPids, startSshd } from "./sshd.ts";

Deno.test({
  name: "sshd lets the client key in as root and stop() leaves no sshd behind",
  fn: async () => {
    const sshd = await startSshd();
    let sessions: number[] = [];
    try {
      assert.match(sshd.hostPublicKey, /^ssh-ed25519 AAAA\S+$/);
      assert.match(sshd.hostKeyFingerprint, /^SHA256:\S{43}$/);
      assert.equal(
        (await Deno.readTextFile(sshd.knownHostsFile)).trim(),
        `[127.0.0.1]:${sshd.port} ${sshd.hostPublicKey}`,
      );
      const host = await connectSsh({
        host: sshd.address,
        port: sshd.port,
        user: sshd.user,
        privateKeyFile: sshd.clientKeyFile,
        knownHostsFile: sshd.knownHostsFile,
      });
      try {
        const r = await host.exec("id -u");
        assert.deepEqual(r, { code: 0, stdout: "0\n", stderr: "" });
        // The open connection is served by a forked sshd that stop() must end too.
        sessions = childPids(sshd.pid);
        assert.ok(sessions.length > 0, "a per-connection sshd runs");
        await sshd.stop();
      } finally {
        await host.close();
      }
    } finally {
      await sshd.stop();
    }
    assert.equal(isAlive(sshd.pid), false, `sshd ${sshd.pid} is gone`);
    for (const pid of sessions) assert.equal(isAlive(pid), false, `session sshd ${pid} is gone`);
    assert.equal(await exists(sshd.dir), false, "its state folder is removed");
  },
});
