import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { PodEnsureCmdSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { renderResolvConf } from "./resolv_conf.ts";

Deno.test("renderResolvConf writes name servers, search domains and options; nothing without", () => {
  const pod = create(PodEnsureCmdSchema, {
    dnsServers: ["10.0.0.10", "1.1.1.1"],
    dnsSearches: ["svc.edge.local", "edge.local"],
    dnsOptions: ["ndots:2", "edns0"],
  });
  assert.equal(
    renderResolvConf(pod),
    "nameserver 10.0.0.10\nnameserver 1.1.1.1\nsearch svc.edge.local edge.local\noptions ndots:2 edns0\n",
  );
  assert.equal(renderResolvConf(create(PodEnsureCmdSchema, {})), undefined);
  assert.equal(
    renderResolvConf(create(PodEnsureCmdSchema, { dnsSearches: ["a.b"] })),
    "search a.b\n",
  );
});
