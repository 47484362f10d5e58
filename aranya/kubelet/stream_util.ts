/** Small pieces shared by the streaming transports (SPDY and WebSocket). */
import type { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";
import type { Logger } from "@aranya/common/log";
import type { StreamSession } from "@aranya/common/session/session_client";
import type { TerminalSize } from "./remote_command.ts";

/** Timeouts of streaming connections. */
export interface StreamTimeouts {
  /** Longest wait for the client's streams and the device's session start, ms. */
  creationMs: number;
  /** A connection without traffic for this long is closed, ms. */
  idleMs: number;
}

/** What every streaming upgrade gets: the raw socket (owned from then on) and its settings. */
export interface StreamUpgrade {
  socket: Duplex;
  /** Bytes read past the upgrade request. */
  head: Buffer;
  timeouts: StreamTimeouts;
  log: Logger;
}

/** Calls `onIdle` once no `touch()` happened for `ms` (checked at a tenth of `ms`, at least 1 s). */
export class IdleTimer {
  #last = Date.now();
  readonly #timer: ReturnType<typeof setInterval>;

  constructor(readonly ms: number, onIdle: () => void) {
    this.#timer = setInterval(() => {
      if (Date.now() - this.#last >= ms) {
        this.stop();
        onIdle();
      }
    }, Math.max(1_000, Math.floor(ms / 10)));
    // Deno's timers are numbers at run time (node's typings say otherwise).
    Deno.unrefTimer(Number(this.#timer));
  }

  /** Records traffic. */
  touch(): void {
    this.#last = Date.now();
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

/** A terminal size message (`{"Width":80,"Height":24}`), or undefined when malformed. */
export function terminalSize(text: string): TerminalSize | undefined {
  try {
    const v = JSON.parse(text);
    const cols = Number(v?.Width), rows = Number(v?.Height);
    if (Number.isInteger(cols) && Number.isInteger(rows) && cols > 0 && rows > 0) {
      return { cols, rows };
    }
  } catch { /* malformed: ignored */ }
  return undefined;
}

/**
 * Terminal sizes from a byte stream of JSON objects (Go's json.Encoder writes
 * one per line); malformed objects are skipped.
 */
export async function* jsonLines(input: ReadableStream<Uint8Array>): AsyncGenerator<TerminalSize> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of input) {
    buf += dec.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("}")) >= 0) {
      const one = buf.slice(0, nl + 1).trim();
      buf = buf.slice(nl + 1);
      const size = terminalSize(one);
      if (size) yield size;
    }
    if (buf.length > 4096) buf = "";
  }
}

/**
 * Copies the client's input into a device session once it is ready, then
 * signals end of input. Rejects when the session ended first (its writes fail).
 */
export async function pumpInput(
  input: ReadableStream<Uint8Array>,
  session: StreamSession,
): Promise<void> {
  await session.ready;
  const reader = input.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (value.byteLength) await session.write(value);
    }
    await session.closeWrite();
  } finally {
    reader.releaseLock();
  }
}

/**
 * Resolves when a write handed to `write` has been taken by the client's connection: `write`
 * starts it and calls `done` from the connection's write callback (node streams' `write(data,
 * cb)`, `ws`'s `send(data, cb)`). It resolves also on failure (a write that throws or fails): a
 * gone client ends the session elsewhere. What the kubelet API's output sinks return, so the
 * device is granted more output only when the client took the last (flow control, link.proto).
 */
export function taken(write: (done: () => void) => void): Promise<void> {
  return new Promise((resolve) => {
    try {
      write(() => resolve());
    } catch {
      resolve();
    }
  });
}
