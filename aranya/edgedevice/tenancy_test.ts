import assert from "node:assert/strict";
import { namespaceRefusal, tenancyKey } from "./tenancy.ts";
import type { EdgeDevice } from "./types.ts";

const device = (pod: NonNullable<EdgeDevice["spec"]>["pod"] = {}): EdgeDevice => ({
  metadata: { namespace: "home", name: "dev", uid: "u1" },
  spec: { pod },
});
const place = (namespace: string) => ({ namespace, name: "p", node: "dev" });

Deno.test("tenancy: own namespace, listed namespaces, and namespaces matching the selector", () => {
  assert.equal(namespaceRefusal(device(), place("home"), undefined), undefined);
  assert.equal(
    namespaceRefusal(device(), place("other"), { team: "a" }),
    'Pod "other/p" may not run on node "dev": EdgeDevice "home/dev" runs pods of namespace "home" only (spec.pod.allowedNamespaces)',
  );
  const listed = device({ allowedNamespaces: ["a", "b"] });
  assert.equal(namespaceRefusal(listed, place("b"), undefined), undefined);
  assert.match(
    namespaceRefusal(listed, place("c"), undefined)!,
    /runs pods of namespace "home" and of "a", "b" \(spec\.pod\.allowedNamespaces\)$/,
  );
  const selected = device({
    allowedNamespaces: ["a"],
    allowedNamespaceSelector: {
      matchLabels: { "edge.example.com/devices": "shared" },
      matchExpressions: [{ key: "env", operator: "NotIn", values: ["prod"] }],
    },
  });
  assert.equal(
    namespaceRefusal(selected, place("x"), { "edge.example.com/devices": "shared" }),
    undefined,
  );
  assert.equal(namespaceRefusal(selected, place("a"), undefined), undefined, "listed still works");
  assert.equal(
    namespaceRefusal(selected, place("x"), { "edge.example.com/devices": "shared", env: "prod" }),
    'Pod "x/p" may not run on node "dev": EdgeDevice "home/dev" runs pods of namespace "home" and of "a" and of namespaces labelled "edge.example.com/devices=shared,env notin (prod)" (spec.pod.allowedNamespaces, spec.pod.allowedNamespaceSelector)',
  );
  assert.notEqual(namespaceRefusal(selected, place("x"), undefined), undefined, "unknown labels");
  // The empty selector is metav1's "everything".
  assert.equal(
    namespaceRefusal(device({ allowedNamespaceSelector: {} }), place("any"), {}),
    undefined,
  );
});

Deno.test("tenancy key: changes with the rule, not with other fields", () => {
  const a = device({ allowedNamespaces: ["a"] });
  assert.equal(
    tenancyKey(a),
    tenancyKey({ ...a, spec: { ...a.spec, node: { labels: { x: "1" } } } }),
  );
  assert.notEqual(tenancyKey(a), tenancyKey(device({ allowedNamespaces: ["b"] })));
  assert.notEqual(
    tenancyKey(a),
    tenancyKey(device({ allowedNamespaces: ["a"], allowedNamespaceSelector: {} })),
  );
});
