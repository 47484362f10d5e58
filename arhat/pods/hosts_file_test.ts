import assert from "node:assert/strict";
import { renderHostsFile } from "./hosts_file.ts";

Deno.test("hosts file: the kubelet's managed file, with the pod IP and host aliases", () => {
  const text = renderHostsFile(
    {
      hostNetwork: false,
      hostname: "web-0",
      name: "web",
      hosts: { foo: "1.2.3.4", bar: "1.2.3.4" },
    },
    "10.88.0.5",
  );
  assert.equal(
    text,
    [
      "# Kubernetes-managed hosts file.",
      "127.0.0.1\tlocalhost",
      "::1\tlocalhost ip6-localhost ip6-loopback",
      "fe00::0\tip6-localnet",
      "fe00::0\tip6-mcastprefix",
      "fe00::1\tip6-allnodes",
      "fe00::2\tip6-allrouters",
      "10.88.0.5\tweb-0",
      "",
      "# Entries added by HostAliases.",
      "1.2.3.4\tfoo\tbar",
      "",
    ].join("\n"),
  );
});

Deno.test("hosts file: hostNetwork pods get the device's file under their own header", () => {
  const text = renderHostsFile(
    { hostNetwork: true, hostname: "", name: "p", hosts: {} },
    "",
    "127.0.0.1 localhost\n192.0.2.2 device\n",
  );
  assert.equal(
    text,
    "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.0.2.2 device\n",
  );
});
