import assert from "node:assert/strict";
import {
  ConfigError,
  ConfigProblems,
  ConfigReader,
  parseConfigYaml,
  readConfigFile,
} from "./config_reader.ts";
import { NotFoundError } from "./errors.ts";
import { InvalidInputError } from "./errors.ts";

function reader(value: unknown, env: Record<string, string> = {}) {
  const problems = new ConfigProblems(env);
  return { r: new ConfigReader(value, "root", problems), problems };
}

Deno.test("ConfigReader reads typed values, expanding strings, with defaults", () => {
  const { r, problems } = reader(
    { s: "${A}-x", n: "${N}", b: "${B}", d: "${D:-1m}", list: ["${A}", "b"], nested: { k: 1 } },
    { A: "a", N: "42", B: "false" },
  );
  assert.equal(r.string("s"), "a-x");
  assert.equal(r.number("n", { integer: true }), 42);
  assert.equal(r.boolean("b", { default: true }), false);
  assert.equal(r.duration("d"), 60_000);
  assert.deepEqual(r.strings("list"), ["a", "b"]);
  assert.equal(r.object("nested").number("k"), 1);
  assert.equal(r.string("absent", { default: "dflt" }), "dflt");
  assert.equal(r.number("absent2"), undefined);
  assert.equal(r.has("s"), true);
  assert.equal(r.has("absent"), false);
  r.finish();
  assert.deepEqual(problems.list, []);
  problems.throwIfAny("test config"); // nothing to throw
});

Deno.test("ConfigReader records problems with their paths and carries on", () => {
  const { r, problems } = reader({
    n: "12abc",
    b: "yes",
    d: "10",
    list: "not a list",
    objs: [{ x: 1 }, 7],
    extra: true,
  });
  assert.equal(r.number("n", { default: 3 }), 3);
  assert.equal(r.boolean("b"), undefined);
  assert.equal(r.duration("d", { default: "1s" }), 1000);
  assert.equal(r.strings("list"), undefined);
  const objs = r.objects("objs");
  objs[0]?.number("x", { min: 2 });
  objs.forEach((o) => o.finish());
  r.string("missing", { required: true });
  r.object("gone", { required: true }).string("inner", { required: true }); // reported once
  r.finish();
  assert.deepEqual(problems.list, [
    'root.n: must be a number; got "12abc"',
    'root.b: must be true or false; got "yes"',
    'root.d: must be a duration such as "10s", "1m30s" or "500ms"; got "10"',
    'root.list: must be a list of strings; got "not a list"',
    "root.objs[1]: must be a mapping; got 7",
    "root.objs[0].x: must be at least 2; got 1",
    "root.missing: is required",
    "root.gone: is required",
    "root.extra: unknown field",
  ]);
  assert.throws(() => problems.throwIfAny("test config"), (err: unknown) => {
    assert.ok(err instanceof ConfigError && err instanceof InvalidInputError);
    assert.equal(err.problems.length, 9);
    assert.ok(err.message.startsWith("Invalid test config (9 problems):\n  - root.n: "));
    return true;
  });
});

Deno.test("ConfigReader never echoes secret values", () => {
  const { r, problems } = reader({ token: "hunter2", password: 1234 });
  r.string("token", { secret: true, oneOf: ["a"] });
  r.string("password", { secret: true });
  assert.deepEqual(problems.list, [
    'root.token: must be one of "a"; got another value',
    "root.password: must be a string; got number",
  ]);
  assert.ok(!problems.list.join().includes("hunter2"));
});

Deno.test("readConfigFile and parseConfigYaml: the one preamble of every config file", async () => {
  await assert.rejects(readConfigFile("/nonexistent/aranya.yaml"), (err: unknown) => {
    assert.ok(err instanceof NotFoundError);
    assert.match(err.message, /Config file "\/nonexistent\/aranya.yaml" does not exist/);
    return true;
  });
  const problems = new ConfigProblems({});
  assert.deepEqual(parseConfigYaml("a: 1\nb: [x]\n", problems, "test config"), { a: 1, b: ["x"] });
  // A duplicated key is refused, not silently taken from its last occurrence.
  assert.throws(
    () => parseConfigYaml("a: 1\na: 2\n", new ConfigProblems({}), "test config"),
    /test config[\s\S]*YAML/,
  );
});
