import assert from "node:assert/strict";
import { formatDuration, parseDuration } from "./duration.ts";
import { InvalidInputError } from "./errors.ts";

Deno.test("parseDuration() reads Go-style durations into milliseconds", () => {
  const cases: [string, number][] = [
    ["0", 0],
    ["500ms", 500],
    ["10s", 10_000],
    ["1m30s", 90_000],
    ["1.5h", 5_400_000],
    ["2h45m", 9_900_000],
    [".5s", 500],
    ["1s500ms", 1500],
    [" 3m ", 180_000],
    ["0s", 0],
    ["0.0001s", 0],
  ];
  for (const [text, want] of cases) assert.equal(parseDuration(text), want, text);
});

Deno.test("parseDuration() refuses text that is not a duration", () => {
  const cases: [string, RegExp][] = [
    ["", /it is empty/],
    ["10", /expected a number and a unit/],
    ["-1s", /expected a number and a unit/],
    ["1d", /expected a number and a unit/],
    ["1 s", /expected a number and a unit/],
    ["1s foo", /expected a number and a unit/],
    ["s", /expected a number and a unit/],
    ["1us", /expected a number and a unit/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseDuration(text), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, text);
      assert.match(err.message, message, text);
      assert.ok(err.message.startsWith(`Invalid duration "${text}"`), err.message);
      return true;
    });
  }
});

Deno.test("formatDuration() writes what parseDuration() reads", () => {
  const cases: [number, string][] = [[0, "0s"], [500, "500ms"], [90_000, "1m30s"], [
    3_600_001,
    "1h1ms",
  ]];
  for (const [ms, want] of cases) {
    assert.equal(formatDuration(ms), want);
    assert.equal(parseDuration(want), ms);
  }
});
