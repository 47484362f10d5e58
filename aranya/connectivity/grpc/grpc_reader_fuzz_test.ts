/**
 * Fuzz of the gRPC length-prefix reader: 10,000 random or mutated byte
 * streams, split at random points. It must never throw or hang; valid
 * streams must come out message for message however they are split.
 */
import assert from "node:assert/strict";
import { encodeGrpcMessageFrame, GrpcMessageReader } from "./grpc_server.ts";
import { prng } from "@aranya/common/session/testing/prng";

const SEED = Number(Deno.env.get("ARANYA_FUZZ_SEED") ?? 20261128);
const N = Number(Deno.env.get("ARANYA_FUZZ_ITERATIONS") ?? 10_000);

Deno.test(`fuzz: ${N} byte streams through the gRPC message reader`, () => {
  const rnd = prng(SEED);
  const int = (n: number) => Math.floor(rnd() * n);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  let valid = 0;
  let errors = 0;
  for (let i = 0; i < N; i++) {
    const messages = Array.from({ length: 1 + int(5) }, () => bytes(int(300)));
    const framed = messages.map((m) => new Uint8Array(encodeGrpcMessageFrame(m)));
    let stream = Uint8Array.from(framed.flatMap((f) => Array.from(f)));
    const mutate = int(3) !== 0;
    if (mutate) {
      const out = Array.from(stream);
      for (let e = 0; e < 1 + int(3); e++) {
        const at = int(out.length);
        switch (int(3)) {
          case 0:
            out[at] = int(256);
            break;
          case 1:
            out.splice(at, int(8));
            break;
          case 2:
            out.splice(at, 0, ...bytes(int(8)));
            break;
        }
      }
      stream = Uint8Array.from(out);
    }
    const reader = new GrpcMessageReader(1024);
    const got: Uint8Array[] = [];
    let failed = false;
    for (let off = 0; off < stream.length && !failed;) {
      const n = 1 + int(64);
      const r = reader.push(stream.subarray(off, off + n));
      got.push(...r.messages);
      if (r.error) {
        failed = true;
        errors++;
        assert.ok(r.error.details.length > 0);
      }
      off += n;
    }
    if (!mutate) {
      valid++;
      assert.ok(!failed, "a valid stream was refused");
      assert.deepEqual(got, messages);
      assert.equal(reader.buffered, 0);
    }
    for (const m of got) assert.ok(m.byteLength <= 1024);
  }
  assert.ok(valid > 0 && errors > 0, `valid ${valid}, refused ${errors}`);
});
