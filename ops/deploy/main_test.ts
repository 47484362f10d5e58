/** `deno task deploy` refuses bad usage and invalid inventories before touching anything. */
import assert from "node:assert/strict";
import { PROJECT_ROOT } from "../build/bundle.ts";
import { runDeployTask } from "./testing/deploy_cli.ts";

const DIR = `${PROJECT_ROOT}/.cache/deploy-main-test`;

Deno.test("deploy CLI: usage errors and an invalid inventory exit 2 with the reason", async () => {
  await Deno.mkdir(DIR, { recursive: true });
  try {
    const none = await runDeployTask([]);
    assert.equal(none.code, 2, none.out);
    assert.match(none.out, /The inventory file is required \(-i\)\.\nUsage: deno task deploy -i/);

    const flag = await runDeployTask(["-i", "x.yaml", "--force"]);
    assert.equal(flag.code, 2, flag.out);
    assert.match(flag.out, /Unknown option '--force'/);

    const missing = await runDeployTask(["-i", `${DIR}/nope.yaml`]);
    assert.equal(missing.code, 2, missing.out);
    assert.match(missing.out, /Invalid inventory ".*nope\.yaml" \(1 problem\):\n {2}- cannot read/);

    await Deno.writeTextFile(
      `${DIR}/bad.yaml`,
      "devices:\n  - { name: pi, address: 192.0.2.1, arch: mips }\n",
    );
    const bad = await runDeployTask(["-i", `${DIR}/bad.yaml`]);
    assert.equal(bad.code, 2, bad.out);
    assert.match(bad.out, /devices\[0\]\.arch: must be one of "x86_64", "aarch64"; got "mips"/);
    assert.match(bad.out, /devices\[0\]\.connectivity: is "websocket" but links\.websocket is not/);
    assert.doesNotMatch(bad.out, /^\s+at /m, "no stack trace");

    await Deno.writeTextFile(
      `${DIR}/one.yaml`,
      'links: { websocket: { url: "wss://a.example.com/v1/link" } }\n' +
        "devices: [{ name: pi, address: 192.0.2.1 }]\n",
    );
    const unknown = await runDeployTask(["-i", `${DIR}/one.yaml`, "--device", "pj"]);
    assert.equal(unknown.code, 2, unknown.out);
    assert.match(unknown.out, /No device "pj" in ".*one\.yaml"/);
  } finally {
    await Deno.remove(DIR, { recursive: true }).catch(() => {});
  }
});
