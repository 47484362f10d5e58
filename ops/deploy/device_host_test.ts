/**
 * The device-host steps' command logic with a scripted host: systemd hosts (this machine has no
 * systemd to run them for real), non-root users through sudo, and the probe's refusals. The
 * no-systemd path runs for real over OpenSSH in e2e/deploy_e2e_test.ts.
 */
import assert from "node:assert/strict";
import {
  enableArhat,
  installFiles,
  isArhatRunning,
  type Probe,
  probeHost,
  remoteHashes,
  startArhat,
} from "./device_host.ts";
import { parseInventory } from "./inventory.ts";
import type { RemoteHost, RemoteResult } from "./remote_host.ts";

/** Answers commands by the first matching rule and records every call. */
class ScriptedHost implements RemoteHost {
  readonly label = "pi@192.0.2.10:22";
  readonly calls: string[] = [];
  readonly writes: { path: string; mode: number }[] = [];
  constructor(readonly rules: [RegExp, Partial<RemoteResult>][]) {}

  exec(command: string): Promise<RemoteResult> {
    this.calls.push(command);
    const hit = this.rules.find(([re]) => re.test(command))?.[1] ?? {};
    return Promise.resolve({ code: 0, stdout: "", stderr: "", ...hit });
  }
  upload(_local: string, remote: string, mode: number): Promise<void> {
    this.writes.push({ path: remote, mode });
    return Promise.resolve();
  }
  writeFile(remote: string, _data: Uint8Array, mode: number): Promise<void> {
    this.writes.push({ path: remote, mode });
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const device = (extra = "") =>
  parseInventory(
    `links: { websocket: { url: "wss://a.example.com/v1/link" } }
devices: [{ name: pi, address: 192.0.2.10, user: pi, arch: aarch64${extra} }]
`,
    { env: {}, file: "/f/inventory.yaml" },
  ).devices[0]!;

Deno.test("probe: systemd host, non-root user through sudo", async () => {
  const host = new ScriptedHost([
    [/^uname -m/, { stdout: "aarch64\n1000\nsystemd\ntools\n" }],
    [/^sudo -n true$/, {}],
  ]);
  const p = await probeHost(host, device());
  assert.deepEqual(p, { arch: "aarch64", init: "systemd", sudo: "sudo -n " });
});

Deno.test("probe: refuses a wrong arch, a user without sudo, and init systemd without it", async () => {
  await assert.rejects(
    probeHost(new ScriptedHost([[/^uname/, { stdout: "x86_64\n0\nnone\ntools\n" }]]), device()),
    /pi@192\.0\.2\.10:22 is "x86_64" but the inventory says arch "aarch64" for "edge\/pi"/,
  );
  await assert.rejects(
    probeHost(
      new ScriptedHost([
        [/^uname/, { stdout: "aarch64\n1000\nnone\ntools\n" }],
        [/^sudo -n true$/, { code: 1, stderr: "sudo: a password is required" }],
      ]),
      device(),
    ),
    /User "pi" on .* is not root and cannot use sudo without a password \(sudo: a password/,
  );
  await assert.rejects(
    probeHost(
      new ScriptedHost([[/^uname/, { stdout: "aarch64\n0\nnone\ntools\n" }]]),
      device(", init: systemd"),
    ),
    /init "systemd" for "edge\/pi" but .* does not run systemd/,
  );
  await assert.rejects(
    probeHost(new ScriptedHost([[/^uname/, { stdout: "aarch64\n0\nnone\nno-tools\n" }]]), device()),
    /lacks "sha256sum" or "install"/,
  );
  await assert.rejects(
    probeHost(
      new ScriptedHost([[/^uname/, { code: 127, stderr: "sh: uname: not found" }]]),
      device(),
    ),
    /Probing pi@192\.0\.2\.10:22 failed \(exit 127\): sh: uname: not found/,
  );
});

const systemd: Probe = { arch: "aarch64", init: "systemd", sudo: "sudo -n " };

Deno.test("systemd: a changed unit is reloaded, enabled and arhat restarted", async () => {
  const host = new ScriptedHost([]);
  await startArhat(host, systemd, { restart: true, unitChanged: true });
  assert.deepEqual(host.calls, [
    "sudo -n systemctl daemon-reload && sudo -n systemctl enable --quiet arhat && " +
    "sudo -n systemctl restart arhat",
  ]);
  const first = new ScriptedHost([]);
  await startArhat(first, systemd, { restart: false, unitChanged: false });
  assert.deepEqual(first.calls, [
    "sudo -n systemctl enable --quiet arhat && sudo -n systemctl start arhat",
  ]);
  const unchanged = new ScriptedHost([]);
  await enableArhat(unchanged, systemd);
  assert.deepEqual(unchanged.calls, ["sudo -n systemctl enable --quiet arhat"]);
  await assert.rejects(
    startArhat(
      new ScriptedHost([[/systemctl/, { code: 5, stderr: "Unit arhat.service not found." }]]),
      systemd,
      { restart: false, unitChanged: false },
    ),
    /Command on pi@192\.0\.2\.10:22 failed \(exit 5\).*Unit arhat\.service not found/,
  );
});

Deno.test("systemd: running means the unit is active", async () => {
  assert.equal(await isArhatRunning(new ScriptedHost([[/is-active/, { code: 0 }]]), systemd), true);
  assert.equal(
    await isArhatRunning(new ScriptedHost([[/is-active/, { code: 3 }]]), systemd),
    false,
  );
});

Deno.test("files: hashes parsed from sha256sum; staged, then installed as root", async () => {
  const sum = "a".repeat(64);
  const host = new ScriptedHost([
    [/sha256sum/, { stdout: `${sum}  /etc/arhat/config.yaml\n` }],
    [/^mktemp/, { stdout: "/tmp/arhat-deploy.AbC123\n" }],
  ]);
  const have = await remoteHashes(host, "sudo -n ", ["/etc/arhat/config.yaml", "/etc/arhat/it's"]);
  assert.deepEqual([...have], [["/etc/arhat/config.yaml", sum]]);
  assert.match(
    host.calls[0]!,
    /^sudo -n sh -c .* \/etc\/arhat\/config.yaml '\/etc\/arhat\/it'\\''s'$/,
  );

  await installFiles(host, "sudo -n ", [
    { remote: "/usr/local/bin/arhat", mode: 0o755, local: "/dist/arhat", sha256: sum },
    { remote: "/etc/arhat/token", mode: 0o600, data: new Uint8Array([1]), sha256: sum },
  ]);
  // Staged privately (0600), then installed with the wanted mode and owner.
  assert.deepEqual(host.writes, [
    { path: "/tmp/arhat-deploy.AbC123/0", mode: 0o600 },
    { path: "/tmp/arhat-deploy.AbC123/1", mode: 0o600 },
  ]);
  assert.deepEqual(host.calls.slice(2), [
    "sudo -n install -D -m 755 -o root -g root /tmp/arhat-deploy.AbC123/0 /usr/local/bin/arhat" +
    " && sudo -n install -D -m 600 -o root -g root /tmp/arhat-deploy.AbC123/1 /etc/arhat/token",
    "rm -rf /tmp/arhat-deploy.AbC123",
  ]);
});
