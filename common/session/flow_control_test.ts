/**
 * Flow control of a stream's output (link.proto): a consumer that takes output slowly slows the
 * device, and either side without flow control works as before. Over an in-memory link pair;
 * the kubelet API's port-forward and exec use it end to end (e2e/kubelet_e2e_test.ts).
 */
import assert from "node:assert/strict";
import { CmdKind, decodeCmd, decodeMsg, encodeCmd, encodeMsg, MsgKind } from "../envelope.ts";
import { memoryLinkPair } from "../testing/memory_link.ts";
import { SessionClient } from "./session_client.ts";
import { type Dispatcher, SessionServer, type StreamContext } from "./session_server.ts";
import { encodeContinue, encodeDone, encodeWindow } from "./payloads.ts";
import { ProtocolError } from "../errors.ts";

const FRAME = 16 * 1024;
const WINDOW = 256 * 1024;

/** A device whose CMD_LOGS writes `total` bytes to stdout and stderr at once, 64 KiB a call. */
function writerDevice(total: number): { dispatcher: Dispatcher; finished: Promise<void> } {
  let finish!: () => void;
  const finished = new Promise<void>((r) => finish = r);
  const write = async (out: (d: Uint8Array) => Promise<void>) => {
    for (let sent = 0; sent < total; sent += 64 * 1024) await out(new Uint8Array(64 * 1024));
  };
  const dispatcher: Dispatcher = {
    handler: (kind) =>
      kind === CmdKind.CMD_LOGS
        ? {
          // No ctx.ready(): output alone must announce flow control first.
          stream: async (ctx: StreamContext) => {
            await Promise.all([write(ctx.stdout), write(ctx.stderr)]);
            finish();
            return 0;
          },
        }
        : undefined,
  };
  return { dispatcher, finished };
}

/** A consumer that takes each chunk a timer turn later, recording how much it held at most. */
function slowConsumer() {
  const c = { received: 0, taken: 0, maxHeld: 0 };
  const take = (d: Uint8Array) => {
    c.received += d.byteLength;
    c.maxHeld = Math.max(c.maxHeld, c.received - c.taken);
    return new Promise<void>((r) =>
      setTimeout(() => {
        c.taken += d.byteLength;
        r();
      }, 0)
    );
  };
  return { c, take };
}

Deno.test("flow control: a slow consumer holds at most the window (plus a frame) of the device's output", async () => {
  const total = 4 << 20; // per stream, 16 times the window
  const [cloud, device] = memoryLinkPair("ns/dev", FRAME);
  const client = new SessionClient(cloud, { streamOutputWindow: WINDOW });
  const { dispatcher, finished } = writerDevice(total);
  new SessionServer(device, { dispatcher }).start();
  client.start();
  const { c, take } = slowConsumer();
  const s = client.stream(CmdKind.CMD_LOGS, new Uint8Array(0), { onStdout: take, onStderr: take });
  assert.equal((await s.done).exitCode, 0);
  await finished;
  assert.equal(c.received, 2 * total, "every byte of both outputs arrived");
  // Both outputs share the window; each may overdraw it by one frame's payload.
  assert.ok(
    c.maxHeld <= WINDOW + 2 * FRAME,
    `the consumer held ${c.maxHeld} bytes at most; the window is ${WINDOW}`,
  );
  cloud.close();
});

Deno.test("flow control off with aranya before it (no window named): the device never waits", async () => {
  const total = 1 << 20;
  const [cloud, device] = memoryLinkPair("ns/dev", FRAME);
  const client = new SessionClient(cloud, { streamOutputWindow: 0 });
  const { dispatcher, finished } = writerDevice(total);
  new SessionServer(device, { dispatcher }).start();
  client.start();
  let received = 0;
  // A consumer that never says it took anything: with flow control the device would stop at
  // the window; without, it writes everything.
  const s = client.stream(CmdKind.CMD_LOGS, new Uint8Array(0), {
    onStdout: (d) => {
      received += d.byteLength;
      return new Promise(() => {});
    },
    onStderr: (d) => {
      received += d.byteLength;
    },
  });
  await finished;
  assert.equal((await s.done).exitCode, 0);
  assert.equal(received, 2 * total);
  cloud.close();
});

Deno.test("flow control off with a device before it (empty MSG_STREAM_CONTINUE): aranya grants nothing", async () => {
  const [cloud, device] = memoryLinkPair("ns/dev", FRAME);
  const client = new SessionClient(cloud, { streamOutputWindow: WINDOW });
  client.start();
  const seen: CmdKind[] = [];
  let windowOnCommand = 0;
  let seq = 0n;
  // A device as arhat was before flow control: it ignores output_window and answers with an
  // empty MSG_STREAM_CONTINUE; an unknown command inside a session would fail it.
  device.start((frame) => {
    const cmd = decodeCmd(frame);
    seen.push(cmd.kind);
    if (cmd.kind !== CmdKind.CMD_LOGS) return;
    windowOnCommand = cmd.outputWindow;
    const send = (kind: MsgKind, payload: Uint8Array, complete: boolean) =>
      device.send(encodeMsg({ kind, sid: cmd.sid, seq: seq++, complete, payload }));
    send(MsgKind.MSG_STREAM_CONTINUE, new Uint8Array(0), true);
    for (let i = 0; i < 64; i++) send(MsgKind.MSG_DATA_STDOUT, new Uint8Array(FRAME - 64), false);
    send(MsgKind.MSG_DONE, encodeDone(0), true);
  });
  let received = 0;
  const s = client.stream(CmdKind.CMD_LOGS, new Uint8Array(0), {
    onStdout: (d) => {
      received += d.byteLength;
    },
  });
  assert.equal((await s.done).exitCode, 0);
  assert.equal(windowOnCommand, WINDOW, "the stream command names the window");
  assert.equal(received, 64 * (FRAME - 64));
  assert.deepEqual(seen, [CmdKind.CMD_LOGS], "no CMD_STREAM_WINDOW went to the old device");
  cloud.close();
});

Deno.test("a window grant for a session that already ended starts nothing on the device", async () => {
  const [cloud, device] = memoryLinkPair("ns/dev", FRAME);
  const { dispatcher } = writerDevice(0);
  const server = new SessionServer(device, { dispatcher });
  server.start();
  const replies: bigint[] = [];
  let answered!: () => void;
  const probeAnswered = new Promise<void>((r) => answered = r);
  cloud.start((frame) => {
    const msg = decodeMsg(frame);
    replies.push(msg.sid);
    if (msg.sid === 78n) answered();
  });
  const cmd = (kind: CmdKind, sid: bigint, payload: Uint8Array) =>
    cloud.send(encodeCmd({ kind, sid, seq: 0n, complete: true, payload }));
  await cmd(CmdKind.CMD_STREAM_WINDOW, 77n, encodeWindow(1024));
  // A command this device does not support, after it on the same ordered link: its error reply
  // means the grant was handled before.
  await cmd(CmdKind.CMD_NODE_INFO_GET, 78n, new Uint8Array(0));
  await probeAnswered;
  assert.deepEqual(replies, [78n], "the stray grant got no reply and started no session");
  assert.equal(server.activeSessions, 0);
  cloud.close();
});

/**
 * A device that floods `frames` stdout frames into a CMD_LOGS session after an
 * MSG_STREAM_CONTINUE saying `flowControl`, whatever aranya grants; it answers
 * CMD_NODE_INFO_GET with a unary MSG_DONE (the link still works).
 */
function floodingDevice(
  device: ReturnType<typeof memoryLinkPair>[1],
  frames: number,
  flowControl: boolean,
) {
  const closed: bigint[] = [];
  let seq = 0n;
  device.start((frame) => {
    const cmd = decodeCmd(frame);
    const send = (kind: MsgKind, payload: Uint8Array, complete: boolean) =>
      device.send(encodeMsg({ kind, sid: cmd.sid, seq: seq++, complete, payload }));
    if (cmd.kind === CmdKind.CMD_SESSION_CLOSE) closed.push(cmd.sid);
    if (cmd.kind === CmdKind.CMD_NODE_INFO_GET) {
      seq = 0n;
      send(MsgKind.MSG_DONE, encodeDone(0), true);
    }
    if (cmd.kind !== CmdKind.CMD_LOGS) return;
    send(MsgKind.MSG_STREAM_CONTINUE, encodeContinue(flowControl), true);
    for (let i = 0; i < frames; i++) {
      send(MsgKind.MSG_DATA_STDOUT, new Uint8Array(FRAME - 64), false);
    }
  });
  return { closed };
}

for (const flowControl of [true, false]) {
  const allowed = flowControl ? "its window plus a frame per output" : "16 windows";
  Deno.test(`a device ${flowControl ? "under" : "without"} flow control that outruns a client that takes nothing is stopped at ${allowed}; the link goes on`, async () => {
    const [cloud, device] = memoryLinkPair("ns/dev", FRAME);
    const client = new SessionClient(cloud, { streamOutputWindow: WINDOW });
    client.start();
    // Enough to pass either bound: 20 windows.
    const frames = Math.ceil((20 * WINDOW) / (FRAME - 64));
    const { closed } = floodingDevice(device, frames, flowControl);
    let received = 0;
    const s = client.stream(CmdKind.CMD_LOGS, new Uint8Array(0), {
      onStdout: (d) => {
        received += d.byteLength;
        return new Promise(() => {}); // never taken
      },
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stuck = new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error("the stream was not stopped within 5 s")), 5000)
    );
    await assert.rejects(Promise.race([s.done, stuck]), (err: unknown) => {
      assert.ok(err instanceof ProtocolError, String(err));
      assert.match(err.message, /Device "ns\/dev" sent \d+ bytes of stream \d+'s output/);
      return true;
    });
    clearTimeout(timer);
    const bound = flowControl ? WINDOW + 2 * FRAME : 16 * WINDOW;
    assert.ok(received <= bound + FRAME, `${received} bytes reached the client; bound ${bound}`);
    assert.ok(received > (flowControl ? WINDOW : 15 * WINDOW), "not stopped early");
    assert.deepEqual(closed, [s.sid], "the device was told to close the session");
    // The link and other sessions go on.
    await client.request(CmdKind.CMD_NODE_INFO_GET, new Uint8Array(0));
    cloud.close();
  });
}
