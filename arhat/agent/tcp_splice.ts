/**
 * Splices a stream session and a TCP connection: the session's input goes to
 * the connection, the connection's bytes go to the session's stdout.
 *
 * @module
 */
import type { StreamContext } from "@aranya/common/session/session_server";

/**
 * Copies both ways until the peer ends (or resets) the connection or the
 * session aborts; then closes the connection. The end of the session's input
 * only half-closes the connection (the peer may still answer); the peer's end
 * ends the forward at once, without waiting for the client's input to end
 * (a server that closes after its answer, as HTTP/1.0 does, ends the client's
 * connection as it would directly, and as `nc` does). Resolves with exit code
 * 0 (a reset by the peer is the end of the stream, as for `nc`); owns `conn`.
 */
export async function spliceTcp(conn: Deno.TcpConn, ctx: StreamContext): Promise<number> {
  const onAbort = () => {
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    await ctx.ready();
    const stopUp = new AbortController();
    const up = ctx.input.pipeTo(conn.writable, { signal: stopUp.signal }).catch(() => {});
    try {
      for await (const c of conn.readable) {
        if (ctx.signal.aborted) break;
        await ctx.stdout(c);
      }
    } catch { /* reset by the peer, or closed on abort */ }
    stopUp.abort();
    await up;
    return 0;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    onAbort();
  }
}
