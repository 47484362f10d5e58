import assert from "node:assert/strict";
import { stableJson } from "./stable_json.ts";

Deno.test("stableJson: key order does not matter, undefined members are left out", () => {
  assert.equal(
    stableJson({ b: 1, a: [{ d: null, c: "x" }], u: undefined }),
    '{"a":[{"c":"x","d":null}],"b":1}',
  );
  assert.equal(stableJson({ x: 1, y: 2 }), stableJson({ y: 2, x: 1 }));
  assert.equal(stableJson([undefined, "s"]), '[null,"s"]');
});
