/**
 * Fuzz: random and mutated frames through every decoder and through both
 * ends of the session layer. Nothing may throw anything but a ProtocolError
 * from a decoder, nothing may hang, and after the storm a fresh pair of
 * sessions still works (the process is fine).
 *
 * Deterministic: a seeded PRNG, so a failure reproduces. ARANYA_FUZZ_SEED
 * overrides the seed; ARANYA_FUZZ_ITERATIONS the count (default 10,000 per
 * target).
 */
import assert from "node:assert/strict";
import {
  CmdKind,
  decodeCmd,
  decodeMsg,
  decodeReject,
  decodeState,
  encodeCmd,
  encodeMsg,
  MsgKind,
  rejectFrame,
  stateFrame,
  StateKind,
} from "../envelope.ts";
import { AranyaError, ProtocolError } from "../errors.ts";
import { memoryLinkPair } from "../testing/memory_link.ts";
import { decodeError, encodeError } from "./error_map.ts";
import { decodeDone, decodeResize, encodeResize } from "./payloads.ts";
import { SessionClient } from "./session_client.ts";
import { SessionServer } from "./session_server.ts";
import { echoDispatcher } from "./testing/echo_dispatcher.ts";
import { prng } from "./testing/prng.ts";

const SEED = Number(Deno.env.get("ARANYA_FUZZ_SEED") ?? 20261128);
const N = Number(Deno.env.get("ARANYA_FUZZ_ITERATIONS") ?? 10_000);

function makeGen(seed: number) {
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  const samples: Uint8Array[] = [
    encodeCmd({ kind: CmdKind.CMD_EXEC, sid: 7n, seq: 0n, complete: true, payload: bytes(20) }),
    encodeCmd({
      kind: CmdKind.CMD_DATA_UPSTREAM,
      sid: 7n,
      seq: 1n,
      complete: false,
      payload: bytes(9),
    }),
    encodeMsg({
      kind: MsgKind.MSG_DATA_STDOUT,
      sid: 7n,
      seq: 3n,
      complete: false,
      payload: bytes(30),
    }),
    encodeMsg({
      kind: MsgKind.MSG_ERROR,
      sid: 9n,
      seq: 0n,
      complete: true,
      payload: encodeError(new Error("x")),
    }),
    stateFrame({
      kind: StateKind.ONLINE,
      device: "ns/dev",
      connectionId: "c1",
      nonce: new Uint8Array(16),
      mac: new Uint8Array(32),
    }),
    rejectFrame(new ProtocolError("bad"), "c1"),
    encodeResize(80, 24),
  ];
  /** One fuzz input: random bytes, or a valid frame mutated. */
  const next = (): Uint8Array => {
    if (int(4) === 0) return bytes(int(64));
    const base = samples[int(samples.length)]!.slice();
    const out = Array.from(base);
    const edits = 1 + int(4);
    for (let e = 0; e < edits; e++) {
      switch (int(5)) {
        case 0: // bit flip
          if (out.length) out[int(out.length)]! ^= 1 << int(8);
          break;
        case 1: // truncate
          out.length = int(out.length + 1);
          break;
        case 2: // insert a byte
          out.splice(int(out.length + 1), 0, int(256));
          break;
        case 3: // duplicate a slice
          out.push(...out.slice(int(out.length + 1)));
          break;
        case 4: // huge varint somewhere
          out.splice(
            int(out.length + 1),
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0x01,
          );
          break;
      }
    }
    return Uint8Array.from(out);
  };
  return { next, int };
}

/** Calls `fn`; only domain errors are acceptable failures. */
function tolerant(name: string, input: Uint8Array, fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof AranyaError)) {
      throw new Error(
        `${name} threw ${String(err)} for input [${Array.from(input).join(",")}] (seed ${SEED})`,
      );
    }
  }
}

Deno.test(`fuzz: ${N} inputs through every decoder`, () => {
  const g = makeGen(SEED);
  const started = performance.now();
  for (let i = 0; i < N; i++) {
    const input = g.next();
    tolerant("decodeCmd", input, () => decodeCmd(input));
    tolerant("decodeMsg", input, () => decodeMsg(input));
    tolerant("decodeState", input, () => decodeState(input));
    tolerant("decodeReject", input, () => decodeReject(input));
    tolerant("decodeError", input, () => decodeError(input));
    tolerant("decodeResize", input, () => decodeResize(input));
    tolerant("decodeDone", input, () => decodeDone(input));
  }
  assert.ok(performance.now() - started < 60_000, "decoders must not hang");
});

Deno.test(`fuzz: ${N} frames into both ends of the session layer`, async () => {
  const g = makeGen(SEED + 1);
  let reconnects = 0;
  let pair = freshPair();
  for (let i = 0; i < N; i++) {
    if (pair.cloud.isClosed || pair.device.isClosed) {
      pair.cloud.close();
      pair.device.close();
      pair = freshPair();
      reconnects++;
    }
    const input = g.next();
    // Inject on both receive paths as if the peer had sent it.
    await pair.device.send(input).catch(() => {});
    await pair.cloud.send(input).catch(() => {});
    if (i % 500 === 0) await new Promise((r) => setTimeout(r, 0));
  }
  await new Promise((r) => setTimeout(r, 50));
  pair.cloud.close();
  pair.device.close();
  // After the storm a fresh pair of sessions works.
  const ok = freshPair();
  const r = await ok.client.request(CmdKind.CMD_NODE_INFO_GET, new Uint8Array([1, 2, 3]));
  assert.deepEqual(r.payload, new Uint8Array([1, 2, 3]));
  ok.cloud.close();
  assert.ok(reconnects > 0, "some inputs must have been malformed enough to close a link");
});

function freshPair() {
  const [cloud, device] = memoryLinkPair("ns/fuzz", 4096);
  const client = new SessionClient(cloud, { unaryTimeoutMs: 200, streamCreationTimeoutMs: 200 });
  const server = new SessionServer(device, { dispatcher: echoDispatcher().dispatcher });
  client.start();
  server.start();
  return { cloud, device, client, server };
}
