/**
 * Splices a stream session and a TCP connection: the session's input goes to
 * the connection, the connection's bytes go to the session's stdout.
 *
 * @module
 */
import type { StreamContext } from "../../common/session/session_server.ts";

/**
 * Copies both ways until the peer closes (or resets) the connection or the
 * session aborts; then closes the connection. Resolves with exit code 0
 * (a reset by the peer is the end of the stream, as for `nc`); owns `conn`.
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
    const up = ctx.input.pipeTo(conn.writable).catch(() => {});
    try {
      for await (const c of conn.readable) {
        if (ctx.signal.aborted) break;
        await ctx.stdout(c);
      }
    } catch { /* reset by the peer, or closed on abort */ }
    await up;
    return 0;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
    onAbort();
  }
}
