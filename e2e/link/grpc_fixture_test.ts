/**
 * The gRPC TransportFixture itself: every handle method against the real
 * server, with a minimal session stand-in that closes a link on a frame that
 * is not a `Msg` envelope.
 */
import assert from "node:assert/strict";
import { MemoryLinkRegistry } from "@aranya/aranya/connectivity/link_registry";
import { StaticAuthenticator } from "@aranya/aranya/connectivity/testing/static_authenticator";
import { decodeMsg, encodeMsg, MsgKind } from "@aranya/common/envelope";
import type { Link } from "@aranya/common/link";
import { grpcFixture } from "./grpc_fixture.ts";

const never = new AbortController().signal;

async function start() {
  const auth = new StaticAuthenticator();
  auth.setToken("ns/dev1", "t1");
  auth.setToken("ns/dev2", "t2");
  const registry = new MemoryLinkRegistry();
  const links: Link[] = [];
  const decoded: MsgKind[] = [];
  const handle = await grpcFixture.start({
    authenticator: auth,
    registry,
    onLink: (link) => {
      links.push(link);
      link.start((frame) => {
        try {
          decoded.push(decodeMsg(frame).kind);
        } catch {
          link.close("malformed envelope");
        }
      });
    },
  });
  return { handle, registry, links, decoded };
}

Deno.test("grpcFixture: dial, restart on the same port, dial again", async () => {
  const { handle, registry, links, decoded } = await start();
  try {
    assert.equal(grpcFixture.name, "grpc");
    const link = await handle.dialer("ns/dev1", "t1").dial(never);
    assert.equal(link.maxFrameSize, grpcFixture.maxFrameSize);
    await link.send(
      encodeMsg({
        kind: MsgKind.MSG_DONE,
        sid: 1n,
        seq: 0n,
        complete: true,
        payload: new Uint8Array(),
      }),
    );
    for (let i = 0; i < 100 && decoded.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(decoded, [MsgKind.MSG_DONE]);
    await handle.restart();
    const info = await link.closed;
    assert.equal(info.by, "remote");
    assert.equal(registry.size, 0);
    const again = await handle.dialer("ns/dev1", "t1").dial(never);
    assert.equal(links.length, 2);
    again.close();
  } finally {
    await handle.stop();
    await handle.stop(); // idempotent
  }
});

Deno.test("grpcFixture: sendMalformed resolves once the server closed the call", async () => {
  const { handle, links } = await start();
  try {
    // Not an envelope: the session stand-in closes the link.
    await handle.sendMalformed("ns/dev1", "t1", new Uint8Array([0xff, 0xff, 0xff, 0xff]));
    assert.equal((await links[0]!.closed).reason, "malformed envelope");
    // Above the frame limit: the transport ends the call itself.
    await handle.sendMalformed("ns/dev2", "t2", new Uint8Array(grpcFixture.maxFrameSize + 1));
    assert.equal((await links[1]!.closed).by, "error");
    // Refused credentials are an error, not a malformed frame.
    await assert.rejects(handle.sendMalformed("ns/dev1", "bad", new Uint8Array([1])), /refused/);
  } finally {
    await handle.stop();
  }
});

Deno.test("grpcFixture: abrupt disconnects leave the server serving", async () => {
  const { handle, registry } = await start();
  try {
    await handle.abruptDisconnects(200);
    const link = await handle.dialer("ns/dev2", "t2").dial(never);
    assert.equal(registry.size, 1);
    link.close();
  } finally {
    await handle.stop();
  }
});
