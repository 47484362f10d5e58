import assert from "node:assert/strict";
import { InternalError, ProtocolError } from "@aranya/common/errors";
import type { OutputChunk } from "../runtime.ts";
import { demuxStream, encodeFrame, FrameDemuxer } from "./demux.ts";
import { concatBytes } from "@aranya/common/bytes";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Merges adjacent chunks of the same stream: the demuxer may split payloads anywhere. */
function merge(chunks: OutputChunk[]): { stream: string; text: string }[] {
  const out: { stream: string; text: string; bytes: Uint8Array[] }[] = [];
  for (const c of chunks) {
    const last = out.at(-1);
    if (last && last.stream === c.stream) last.bytes.push(c.data);
    else out.push({ stream: c.stream, text: "", bytes: [c.data] });
  }
  return out.map((o) => ({ stream: o.stream, text: dec.decode(concatBytes(o.bytes)) }));
}

function feed(pieces: Uint8Array[]): OutputChunk[] {
  const d = new FrameDemuxer();
  const out = pieces.flatMap((p) => d.push(p));
  d.finish();
  return out;
}

const big = "x".repeat(3_000);
const frames = [
  encodeFrame(1, enc.encode("hello\n")),
  encodeFrame(2, enc.encode("oops\n")),
  encodeFrame(1, new Uint8Array()), // empty frames produce nothing
  encodeFrame(0, enc.encode("stdin-echo")), // stream 0 is reported as stdout
  encodeFrame(1, enc.encode(big)),
  encodeFrame(2, enc.encode("é")), // two bytes, split between chunks at one boundary
];
const wire = concatBytes(frames);
const expected = [
  { stream: "stdout", text: "hello\n" },
  { stream: "stderr", text: "oops\n" },
  { stream: "stdout", text: "stdin-echo" + big },
  { stream: "stderr", text: "é" },
];

Deno.test("demux: whole frames in one chunk", () => {
  assert.deepEqual(merge(feed([wire])), expected);
});

Deno.test("demux: a stream split in two at every byte boundary", () => {
  for (let i = 0; i <= wire.length; i++) {
    assert.deepEqual(
      merge(feed([wire.subarray(0, i), wire.subarray(i)])),
      expected,
      `split at ${i}`,
    );
  }
});

Deno.test("demux: a stream split in three at every pair of boundaries around the headers", () => {
  const points: number[] = [];
  let off = 0;
  for (const f of frames) {
    for (let i = Math.max(0, off - 1); i <= Math.min(wire.length, off + 9); i++) points.push(i);
    off += f.length;
  }
  for (const a of points) {
    for (const b of points) {
      if (b < a) continue;
      const pieces = [wire.subarray(0, a), wire.subarray(a, b), wire.subarray(b)];
      assert.deepEqual(merge(feed(pieces)), expected, `split at ${a} and ${b}`);
    }
  }
});

Deno.test("demux: a frame larger than any read arrives in pieces without being buffered", () => {
  const payload = new Uint8Array(1_000_000).map((_, i) => i % 251);
  const frame = encodeFrame(1, payload);
  const d = new FrameDemuxer();
  const first = d.push(frame.subarray(0, 65_536));
  assert.equal(first.length, 1);
  assert.equal(first[0]!.data.length, 65_536 - 8, "payload is handed out as it arrives");
  const rest = d.push(frame.subarray(65_536));
  d.finish();
  assert.deepEqual(concatBytes([...first, ...rest].map((c) => c.data)), payload);
});

Deno.test("demux: a stream fed one byte at a time", () => {
  const pieces: Uint8Array[] = [];
  for (let i = 0; i < wire.length; i++) pieces.push(wire.subarray(i, i + 1));
  assert.deepEqual(merge(feed(pieces)), expected);
});

Deno.test("demux: output chunks are copies, never views of the input", () => {
  const input = encodeFrame(1, enc.encode("abc"));
  const [chunk] = new FrameDemuxer().push(input);
  input.fill(0);
  assert.equal(dec.decode(chunk!.data), "abc");
});

Deno.test("demux: malformed headers and truncated frames are protocol errors", () => {
  assert.throws(
    () => new FrameDemuxer().push(new Uint8Array([7, 0, 0, 0, 0, 0, 0, 1])),
    ProtocolError,
  );
  // Raw text mistaken for the multiplexed format: non-zero padding bytes.
  assert.throws(() => new FrameDemuxer().push(enc.encode("hello world\n")), ProtocolError);
  const truncatedHeader = new FrameDemuxer();
  truncatedHeader.push(new Uint8Array([1, 0, 0]));
  assert.throws(() => truncatedHeader.finish(), ProtocolError);
  const truncatedPayload = new FrameDemuxer();
  assert.equal(
    truncatedPayload.push(encodeFrame(1, enc.encode("abcdef")).subarray(0, 10)).length,
    1,
  );
  assert.throws(() => truncatedPayload.finish(), /4 payload bytes missing/);
});

Deno.test("demux: a systemerr frame is an internal error carrying the engine's text", () => {
  const d = new FrameDemuxer();
  const sys = encodeFrame(3, enc.encode("exec failed: no such file\n"));
  assert.deepEqual(merge(d.push(encodeFrame(1, enc.encode("before")))), [
    { stream: "stdout", text: "before" },
  ]);
  d.push(sys.subarray(0, 12));
  assert.throws(() => d.push(sys.subarray(12)), (err) => {
    assert.ok(err instanceof InternalError);
    assert.match(err.message, /"exec failed: no such file"/);
    return true;
  });
});

function sourceOf(pieces: Uint8Array[], onCancel?: (reason: unknown) => void) {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < pieces.length) c.enqueue(pieces[i++]!);
      else c.close();
    },
    cancel: onCancel,
  });
}

async function readAll(s: ReadableStream<OutputChunk>): Promise<OutputChunk[]> {
  const out: OutputChunk[] = [];
  for await (const c of s) out.push(c);
  return out;
}

Deno.test("demuxStream: demultiplexes, or passes tty bytes through as stdout", async () => {
  const ends: string[] = [];
  const pieces = [wire.subarray(0, 5), new Uint8Array(), wire.subarray(5)];
  const got = await readAll(demuxStream(sourceOf(pieces), {
    tty: false,
    onEnd: (r) => ends.push(r),
  }));
  assert.deepEqual(merge(got), expected);
  const raw = await readAll(demuxStream(sourceOf([enc.encode("a\r\n"), enc.encode("b")]), {
    tty: true,
    onEnd: (r) => ends.push(r),
  }));
  assert.deepEqual(merge(raw), [{ stream: "stdout", text: "a\r\nb" }]);
  assert.deepEqual(ends, ["done", "done"]);
});

Deno.test("demuxStream: canceling cancels the source; a bad frame errors the output", async () => {
  let canceled: unknown = "not canceled";
  const ends: string[] = [];
  const s = demuxStream(sourceOf(frames, (r) => canceled = r), {
    tty: false,
    onEnd: (r) => ends.push(r),
  });
  const reader = s.getReader();
  assert.equal(dec.decode((await reader.read()).value!.data), "hello\n");
  await reader.cancel("enough");
  assert.equal(canceled, "enough");

  const bad = demuxStream(sourceOf([enc.encode("not multiplexed at all")]), {
    tty: false,
    onEnd: (r) => ends.push(r),
  });
  await assert.rejects(readAll(bad), ProtocolError);
  const truncated = demuxStream(sourceOf([frames[0]!.subarray(0, 9)]), {
    tty: false,
    onEnd: (r) => ends.push(r),
  });
  await assert.rejects(readAll(truncated), ProtocolError);
  assert.deepEqual(ends, ["canceled", "error", "error"]);
});
