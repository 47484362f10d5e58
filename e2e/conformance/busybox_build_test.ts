import assert from "node:assert/strict";
import { debSrcLines } from "./busybox_build.ts";

Deno.test("deb-src entries mirror the machine's deb822 and one-line apt sources", () => {
  const deb822 = [
    "Types: deb",
    "URIs: http://deb.debian.org/debian",
    "Suites: bookworm bookworm-updates",
    "Components: main",
    "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg",
    "",
    "Types: deb-src",
    "URIs: http://example.org/ignored-already-src",
    "Suites: x",
  ].join("\n");
  const oneLine =
    "deb [arch=amd64] http://mirror.local/debian bookworm main contrib\n# deb http://x y z\n";
  assert.deepEqual(debSrcLines([deb822, oneLine]), [
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main",
    "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main",
    "deb-src [arch=amd64] http://mirror.local/debian bookworm main contrib",
  ]);
  assert.deepEqual(debSrcLines([""]), []);
});
