/**
 * A narrow `deno task conformance`: five simple upstream [Conformance] specs
 * of common/node and common/storage through the same main (e2e.test built from
 * the pinned module, images built locally, a fresh control plane, aranya and
 * one arhat on Podman), so the suite's plumbing cannot rot unnoticed.
 *
 * Time: about 30 s once e2e.test is built. The first run on a machine also
 * compiles e2e.test and agnhost (a few minutes after the control plane's
 * build, whose packages Go's cache shares; 10-20 minutes from a cold cache).
 */
import assert from "node:assert/strict";
import { conformance } from "./main.ts";
import { escapeRegex } from "./selection.ts";

const SPECS = [
  "[sig-node] Pods should get a host IP [NodeConformance] [Conformance]",
  "[sig-node] Downward API should provide pod name, namespace and IP address as env vars [NodeConformance] [Conformance]",
  "[sig-node] Kubelet when scheduling a busybox command in a pod should print the output to logs [NodeConformance] [Conformance]",
  "[sig-storage] ConfigMap should be consumable from pods in volume [NodeConformance] [Conformance]",
  "[sig-storage] Secrets should be consumable from pods in volume [NodeConformance] [Conformance]",
];

Deno.test({
  name: "conformance: five upstream [Conformance] specs pass against one arhat device on Podman",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { code, closing } = await conformance({
      focus: `^(?:${SPECS.map(escapeRegex).join("|")})$`,
      runtime: "podman",
      timeoutMin: 30,
      parallel: 1,
      // Its own folders, control plane and device: a `deno task conformance` may be running.
      instance: "smoke",
      list: false,
    });
    assert.ok(closing, "the run printed its closing line");
    const summary = closing.summary as Record<string, unknown>;
    assert.equal(code, 0, `the run measured: ${closing.error ?? ""}`);
    assert.equal(summary.selected, SPECS.length);
    assert.deepEqual(closing.failed, [], "no spec failed");
    assert.equal(summary.passed, SPECS.length);
    assert.equal(summary.runtime, "podman");
    assert.equal(summary.tenancy, "selector");
  },
});
