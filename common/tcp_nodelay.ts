/**
 * Turns Nagle's algorithm off on a client library's socket. Small request and
 * reply frames otherwise wait for the peer's delayed ACK (about 40 ms each on
 * Linux), which is what MQTT round trips measured before this.
 */

/** Anything that may hold a node:net socket in `stream`. */
export interface HasStream {
  stream?: unknown;
}

/** Calls `setNoDelay(true)` on `client.stream` when it is a TCP or TLS socket. */
export function setTcpNoDelay(client: HasStream): void {
  const s = client.stream as { setNoDelay?: (on: boolean) => void } | undefined;
  try {
    s?.setNoDelay?.(true);
  } catch { /* not a socket, or already closed */ }
}
