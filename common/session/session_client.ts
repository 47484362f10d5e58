/**
 * The aranya side of the session layer: commands to one device over one Link.
 *
 * - `request` sends a unary command and resolves with the device's single
 *   reply (or rejects with the domain error the device reported, a
 *   TimeoutError, or UnavailableError when the link drops).
 * - `stream` opens a stream session (exec, attach, logs, port-forward): output
 *   arrives through callbacks in order; input may be written once the device
 *   sent MSG_STREAM_CONTINUE; `done` settles when the device ends the session.
 * - Messages the device starts itself (pod and node status changes) go to
 *   every handler registered with `onUnsolicited`; each picks the kinds it
 *   handles.
 * - `onMessage` (option) observes every complete message either way, by kind:
 *   what crosses the link besides transport keepalives (metrics).
 *
 * Framing rules are in proto/aranya/link.proto. A frame that does not decode
 * closes the link (nothing in it can be trusted); a frame that breaks a
 * session's rules (bad order, oversized message) fails only that session.
 *
 * A stream's output that the consumer has not taken yet is bounded, so a
 * device cannot grow aranya's memory by outrunning a slow client: a device
 * under flow control may be ahead by its window plus one frame per output
 * (more is a protocol violation); one without (an arhat from before flow
 * control) by {@link UNCONTROLLED_OUTPUT_WINDOWS} windows. Beyond that the
 * session is closed on both sides and fails with a ProtocolError naming the
 * device and the bytes; other sessions and the link go on.
 */
import {
  CmdKind,
  decodeMsg,
  decodeState,
  encodeCmd,
  ENVELOPE_OVERHEAD,
  type Msg,
  MsgKind,
  StateKind,
} from "../envelope.ts";
import {
  CanceledError,
  errorMessage,
  InvalidInputError,
  ProtocolError,
  TimeoutError,
  UnavailableError,
} from "../errors.ts";
import type { Link } from "../link.ts";
import { type Logger, nullLogger } from "../log.ts";
import { deferred } from "../deferred.ts";
import { chunk, MessageAssembler } from "./assembler.ts";
import { Deadlines } from "./deadlines.ts";
import { decodeError } from "./error_map.ts";
import { decodeContinue, decodeDone, encodeResize, encodeWindow } from "./payloads.ts";
import { Sequencer } from "./sequencer.ts";

/** Message kinds counted per frame by `onMessage` (byte streams). */
const DATA_KINDS: ReadonlySet<MsgKind> = new Set([
  MsgKind.MSG_DATA_STDOUT,
  MsgKind.MSG_DATA_STDERR,
]);

/** Device-started sessions have this bit set in their sid. */
export const DEVICE_SID_BIT = 1n << 63n;

/** A complete message from the device. */
export interface Reply {
  kind: MsgKind;
  payload: Uint8Array;
}

/** A stream's output window by default: 4 MiB (link.proto, flow control). */
export const DEFAULT_STREAM_OUTPUT_WINDOW = 4 << 20;

/**
 * How many output windows a device without flow control may run ahead of a slow consumer before
 * its stream is failed (64 MiB at the default window).
 */
export const UNCONTROLLED_OUTPUT_WINDOWS = 16;

/** Options for {@link SessionClient}. */
export interface SessionClientOptions {
  /** Default unary timeout, ms (default 60 s). */
  unaryTimeoutMs?: number;
  /** Time a stream may take to send MSG_STREAM_CONTINUE, ms (default 30 s). */
  streamCreationTimeoutMs?: number;
  /** Largest reassembled message, bytes (default 64 MiB). */
  maxMessageBytes?: number;
  /** Most device-started sessions open at once (default 1024). */
  maxDeviceSessions?: number;
  /**
   * A stream's output window, bytes (default 4 MiB; 0: no flow control): the most output a
   * device that honours it sends that the stream's consumer has not taken yet (link.proto).
   */
  streamOutputWindow?: number;
  /**
   * Called once per message that crosses the link at the session layer: each
   * command aranya sends (once per message, not per chunk or data frame) and
   * each complete message from the device, with its kind name (e.g.
   * "CMD_NODE_INFO_GET", "MSG_POD_STATUS"). Stream data is counted per frame.
   * Transport keepalives never reach this layer. Must not throw.
   */
  onMessage?: (direction: "sent" | "received", kind: string) => void;
  log?: Logger;
}

/** Options of one unary request. */
export interface RequestOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Options of one stream session. */
export interface StreamOptions {
  /**
   * Output callbacks, called in order; must not throw. One that returns a promise has taken
   * the data when it settles (the device is granted more output only then: backpressure); one
   * that returns nothing has taken it at once.
   */
  onStdout?: (data: Uint8Array) => unknown;
  onStderr?: (data: Uint8Array) => unknown;
  creationTimeoutMs?: number;
  signal?: AbortSignal;
}

/** How a stream session ended. */
export interface StreamResult {
  exitCode: number;
}

/** One open stream session. */
export interface StreamSession {
  readonly sid: bigint;
  /** Resolves when the device is ready for input (MSG_STREAM_CONTINUE). */
  readonly ready: Promise<void>;
  /** Settles when the device ends the session: resolves on MSG_DONE, rejects with its error. */
  readonly done: Promise<StreamResult>;
  /** Sends input bytes (waits for `ready`); rejects once the session ended. */
  write(data: Uint8Array): Promise<void>;
  /** Signals end of input (stdin EOF). */
  closeWrite(): Promise<void>;
  /** Sends a terminal size. */
  resize(cols: number, rows: number): Promise<void>;
  /** Cancels the session: tells the device, rejects `done` with CanceledError. Idempotent. */
  cancel(reason?: string): void;
}

interface Session {
  readonly sid: bigint;
  readonly sequencer: Sequencer<Msg>;
  nextSeq: bigint;
  /** Handles one in-order frame; throws ProtocolError to fail the session. */
  onFrame(msg: Msg): void;
  /** Ends the session with an error (link down, timeout, protocol error). */
  fail(err: Error): void;
}

/** Aranya's view of the sessions with one device. */
export class SessionClient {
  readonly #link: Link;
  readonly #log: Logger;
  readonly #unaryTimeoutMs: number;
  readonly #streamCreationTimeoutMs: number;
  readonly #streamOutputWindow: number;
  readonly #maxMessageBytes: number;
  readonly #maxDeviceSessions: number;
  readonly #maxChunk: number;
  readonly #sessions = new Map<bigint, Session>();
  readonly #deviceSessions = new Map<bigint, { seq: Sequencer<Msg>; asm: MessageAssembler }>();
  readonly #closedSids = new Set<bigint>();
  readonly #deadlines = new Deadlines<bigint>();
  #nextSid: bigint;
  #closed = false;
  readonly #unsolicited = new Set<(reply: Reply) => void>();
  readonly #onMessage: (direction: "sent" | "received", kind: string) => void;

  constructor(link: Link, opts: SessionClientOptions = {}) {
    this.#link = link;
    this.#log = opts.log ?? nullLogger;
    this.#unaryTimeoutMs = opts.unaryTimeoutMs ?? 60_000;
    this.#streamCreationTimeoutMs = opts.streamCreationTimeoutMs ?? 30_000;
    this.#streamOutputWindow = opts.streamOutputWindow ?? DEFAULT_STREAM_OUTPUT_WINDOW;
    this.#maxMessageBytes = opts.maxMessageBytes ?? 64 * 1024 * 1024;
    this.#maxDeviceSessions = opts.maxDeviceSessions ?? 1024;
    this.#onMessage = opts.onMessage ?? (() => {});
    this.#maxChunk = link.maxFrameSize - ENVELOPE_OVERHEAD;
    if (this.#maxChunk < 16) {
      throw new InvalidInputError(`Link frame size ${link.maxFrameSize} is too small`);
    }
    this.#nextSid = BigInt(1 + Math.floor(Math.random() * 0xffff_ffff));
  }

  /** Starts receiving. Call once, before any request. */
  start(): void {
    this.#link.start((frame) => this.#receive(frame));
    this.#link.closed.then((info) => {
      this.#closed = true;
      const err = new UnavailableError(
        `Link to device "${this.#link.device}" closed (${info.by}: ${info.reason})`,
      );
      for (const s of [...this.#sessions.values()]) s.fail(err);
      this.#sessions.clear();
      this.#deviceSessions.clear();
    });
  }

  /**
   * Adds a receiver of the messages the device starts itself (MSG_POD_STATUS,
   * MSG_NODE_STATUS). Every handler gets every such message, in the order they
   * were added, and ignores the kinds it does not handle; a handler that throws
   * is logged and does not keep the message from the others. Returns a
   * function that removes the handler.
   */
  onUnsolicited(handler: (reply: Reply) => void): () => void {
    const h = (reply: Reply) => handler(reply);
    this.#unsolicited.add(h);
    return () => this.#unsolicited.delete(h);
  }

  /** The link under this client. */
  get link(): Link {
    return this.#link;
  }

  /** Number of sessions in flight. */
  get activeSessions(): number {
    return this.#sessions.size;
  }

  /** Sends a unary command and waits for the reply. */
  request(kind: CmdKind, payload: Uint8Array, opts: RequestOptions = {}): Promise<Reply> {
    if (this.#closed) {
      return Promise.reject(new UnavailableError(`Device "${this.#link.device}" is not connected`));
    }
    const sid = this.#allocSid();
    const result = deferred<Reply>();
    const asm = new MessageAssembler(this.#maxMessageBytes);
    const timeoutMs = opts.timeoutMs ?? this.#unaryTimeoutMs;
    const cleanup = () => {
      this.#deadlines.clear(sid);
      opts.signal?.removeEventListener("abort", onAbort);
      this.#sessions.delete(sid);
    };
    const session: Session = {
      sid,
      sequencer: new Sequencer<Msg>(),
      nextSeq: 0n,
      onFrame: (msg) => {
        if (msg.kind === MsgKind.MSG_STREAM_CONTINUE) return;
        const whole = asm.push(msg.kind, msg.payload, msg.complete);
        if (whole === undefined) return;
        cleanup();
        if (msg.kind === MsgKind.MSG_ERROR) result.reject(decodeError(whole));
        else result.resolve({ kind: msg.kind, payload: whole });
      },
      fail: (err) => {
        cleanup();
        result.reject(err);
      },
    };
    const onAbort = () => {
      this.#closeSession(session, "canceled by aranya");
      session.fail(
        new CanceledError(`Request ${sid} to device "${this.#link.device}" was canceled`),
      );
    };
    this.#sessions.set(sid, session);
    this.#deadlines.set(sid, timeoutMs, () => {
      this.#closeSession(session, "timed out");
      session.fail(
        new TimeoutError(
          `Device "${this.#link.device}" did not answer command ${
            CmdKind[kind]
          } within ${timeoutMs} ms`,
        ),
      );
    });
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
    this.#sendMessage(session, kind, payload).catch((err) => session.fail(err));
    return result.promise;
  }

  /** Opens a stream session. */
  stream(kind: CmdKind, payload: Uint8Array, opts: StreamOptions = {}): StreamSession {
    const sid = this.#allocSid();
    const ready = deferred<void>();
    const done = deferred<StreamResult>();
    // Callers may ignore either promise; an unobserved rejection must not crash the process.
    ready.promise.catch(() => {});
    done.promise.catch(() => {});
    const asm = new MessageAssembler(this.#maxMessageBytes);
    const creationMs = opts.creationTimeoutMs ?? this.#streamCreationTimeoutMs;
    const window = this.#streamOutputWindow;
    // Flow control (link.proto): the device says in MSG_STREAM_CONTINUE whether it honours the
    // window; output the consumer has taken is granted back in steps of a quarter window.
    let flow = false;
    let ungranted = 0;
    const step = Math.max(1, Math.floor(window / 4));
    const grant = () => {
      if (ended || !flow || ungranted < step) return;
      const bytes = ungranted;
      ungranted = 0;
      this.#send(session, CmdKind.CMD_STREAM_WINDOW, encodeWindow(bytes), true).catch(() => {});
    };
    // Output handed to the consumer that it has not taken yet, and how much of it may be.
    let held = 0;
    const bound = () =>
      flow ? window + 2 * this.#link.maxFrameSize : window * UNCONTROLLED_OUTPUT_WINDOWS;
    const deliver = (fn: StreamOptions["onStdout"], data: Uint8Array) => {
      const taken = () => {
        ungranted += data.byteLength;
        grant();
      };
      const r = fn?.(data);
      if (!(r instanceof Promise)) return taken();
      held += data.byteLength;
      r.then(taken, taken).finally(() => held -= data.byteLength);
      if (window > 0 && held > bound() && !ended) {
        this.#closeSession(session, "output beyond the window");
        session.fail(
          new ProtocolError(
            `Device "${this.#link.device}" sent ${held} bytes of stream ${sid}'s output that the client had not taken, more than the ${bound()} allowed ${
              flow ? "under flow control" : "without flow control"
            }`,
          ),
        );
      }
    };
    let ended = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = () => {
      ended = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      this.#sessions.delete(sid);
    };
    const session: Session = {
      sid,
      sequencer: new Sequencer<Msg>(),
      nextSeq: 0n,
      onFrame: (msg) => {
        switch (msg.kind) {
          case MsgKind.MSG_STREAM_CONTINUE:
            clearTimeout(timer);
            flow = window > 0 && decodeContinue(msg.payload).flowControl;
            grant();
            ready.resolve();
            return;
          case MsgKind.MSG_DATA_STDOUT:
            if (msg.payload.byteLength) deliver(opts.onStdout, msg.payload);
            return;
          case MsgKind.MSG_DATA_STDERR:
            if (msg.payload.byteLength) deliver(opts.onStderr, msg.payload);
            return;
        }
        const whole = asm.push(msg.kind, msg.payload, msg.complete);
        if (whole === undefined) return;
        if (msg.kind === MsgKind.MSG_DONE) {
          finish();
          ready.resolve();
          done.resolve({ exitCode: decodeDone(whole) });
        } else if (msg.kind === MsgKind.MSG_ERROR) {
          finish();
          const err = decodeError(whole);
          ready.reject(err);
          done.reject(err);
        } else {
          throw new ProtocolError(`Unexpected message kind ${MsgKind[msg.kind]} in a stream`);
        }
      },
      fail: (err) => {
        if (ended) return;
        finish();
        ready.reject(err);
        done.reject(err);
      },
    };
    const onAbort = () => stream.cancel("aborted");
    this.#sessions.set(sid, session);
    if (this.#closed) {
      session.fail(new UnavailableError(`Device "${this.#link.device}" is not connected`));
    } else {
      timer = setTimeout(() => {
        this.#closeSession(session, "stream creation timed out");
        session.fail(
          new TimeoutError(
            `Device "${this.#link.device}" did not start stream ${
              CmdKind[kind]
            } within ${creationMs} ms`,
          ),
        );
      }, creationMs);
      if (opts.signal?.aborted) queueMicrotask(onAbort);
      else opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.#sendMessage(session, kind, payload, window).catch((err) => session.fail(err));
    }
    const gone = () =>
      new UnavailableError(`Stream ${sid} to device "${this.#link.device}" has ended`);
    const stream: StreamSession = {
      sid,
      ready: ready.promise,
      done: done.promise,
      write: async (data) => {
        await ready.promise;
        if (ended) throw gone();
        await this.#sendData(session, data);
      },
      closeWrite: async () => {
        await ready.promise;
        if (ended) return;
        await this.#send(session, CmdKind.CMD_DATA_UPSTREAM, new Uint8Array(0), true);
      },
      resize: async (cols, rows) => {
        await ready.promise;
        if (ended) throw gone();
        await this.#send(session, CmdKind.CMD_TTY_RESIZE, encodeResize(cols, rows), true);
      },
      cancel: (reason = "canceled") => {
        if (ended) return;
        this.#closeSession(session, reason);
        session.fail(
          new CanceledError(`Stream ${sid} to device "${this.#link.device}" was canceled`),
        );
      },
    };
    return stream;
  }

  #allocSid(): bigint {
    for (;;) {
      const sid = this.#nextSid;
      this.#nextSid = this.#nextSid + 1n >= DEVICE_SID_BIT ? 1n : this.#nextSid + 1n;
      if (!this.#sessions.has(sid)) return sid;
    }
  }

  #send(
    s: Session,
    kind: CmdKind,
    payload: Uint8Array,
    complete: boolean,
    outputWindow = 0,
  ): Promise<void> {
    const frame = encodeCmd({
      kind,
      sid: s.sid,
      seq: s.nextSeq++,
      complete,
      payload,
      outputWindow,
    });
    if (complete || kind === CmdKind.CMD_DATA_UPSTREAM) this.#onMessage("sent", CmdKind[kind]);
    return this.#link.send(frame);
  }

  /** Sends one message, chunked; every chunk is queued before this returns. */
  #sendMessage(s: Session, kind: CmdKind, payload: Uint8Array, outputWindow = 0): Promise<void> {
    const parts = chunk(payload, this.#maxChunk);
    let last: Promise<void> = Promise.resolve();
    for (let i = 0; i < parts.length; i++) {
      last = this.#send(s, kind, parts[i]!, i === parts.length - 1, outputWindow);
      if (i < parts.length - 1) last.catch(() => {});
    }
    return last;
  }

  #sendData(s: Session, data: Uint8Array): Promise<void> {
    const parts = chunk(data, this.#maxChunk);
    let last: Promise<void> = Promise.resolve();
    for (const p of parts) {
      last.catch(() => {});
      last = this.#send(s, CmdKind.CMD_DATA_UPSTREAM, p, false);
    }
    return last;
  }

  /** Tells the device a session is over (best effort) and remembers the sid to ignore stragglers. */
  #closeSession(s: Session, reason: string): void {
    this.#sessions.delete(s.sid);
    this.#rememberClosed(s.sid);
    if (this.#closed) return;
    this.#send(s, CmdKind.CMD_SESSION_CLOSE, new TextEncoder().encode(reason), true).catch(
      () => {},
    );
  }

  #rememberClosed(sid: bigint): void {
    this.#closedSids.add(sid);
    if (this.#closedSids.size > 4096) {
      const first = this.#closedSids.values().next().value;
      if (first !== undefined) this.#closedSids.delete(first);
    }
  }

  #receive(frame: Uint8Array): void {
    let msg: Msg;
    try {
      msg = decodeMsg(frame);
    } catch (err) {
      this.#log.warn("closing link after a malformed frame", {
        device: this.#link.device,
        error: errorMessage(err),
      });
      this.#link.close(new ProtocolError("malformed frame"));
      return;
    }
    if (msg.complete || DATA_KINDS.has(msg.kind)) {
      this.#onMessage("received", MsgKind[msg.kind] ?? `MSG_${msg.kind}`);
    }
    if (msg.sid === 0n) return this.#receiveLinkMessage(msg);
    if (msg.sid & DEVICE_SID_BIT) return this.#receiveDeviceMessage(msg);
    const s = this.#sessions.get(msg.sid);
    if (!s) {
      // A straggler of a session we ended, or a sid we never opened: tell the device once.
      if (!this.#closedSids.has(msg.sid)) {
        this.#rememberClosed(msg.sid);
        this.#onMessage("sent", CmdKind[CmdKind.CMD_SESSION_CLOSE]);
        const frameOut = encodeCmd({
          kind: CmdKind.CMD_SESSION_CLOSE,
          sid: msg.sid,
          seq: 0n,
          complete: true,
          payload: new Uint8Array(0),
        });
        this.#link.send(frameOut).catch(() => {});
      }
      return;
    }
    try {
      for (const m of s.sequencer.push(msg)) {
        if (!this.#sessions.has(s.sid)) break;
        s.onFrame(m);
      }
    } catch (err) {
      this.#log.warn("session failed on a bad frame", {
        device: this.#link.device,
        sid: s.sid,
        error: errorMessage(err),
      });
      this.#closeSession(s, "protocol error");
      s.fail(err instanceof Error ? err : new ProtocolError(String(err)));
    }
  }

  #receiveLinkMessage(msg: Msg): void {
    if (msg.kind !== MsgKind.MSG_STATE) return;
    try {
      const state = decodeState(msg.payload);
      if (state.kind === StateKind.OFFLINE) this.#link.close("device went offline");
    } catch (err) {
      this.#log.warn("ignoring a malformed state message", {
        device: this.#link.device,
        error: errorMessage(err),
      });
    }
  }

  #receiveDeviceMessage(msg: Msg): void {
    let ds = this.#deviceSessions.get(msg.sid);
    if (!ds) {
      if (this.#deviceSessions.size >= this.#maxDeviceSessions) {
        this.#log.warn("closing link: too many device sessions", { device: this.#link.device });
        this.#link.close("too many device sessions");
        return;
      }
      ds = { seq: new Sequencer<Msg>(), asm: new MessageAssembler(this.#maxMessageBytes) };
      this.#deviceSessions.set(msg.sid, ds);
    }
    try {
      for (const m of ds.seq.push(msg)) {
        const whole = ds.asm.push(m.kind, m.payload, m.complete);
        if (whole === undefined) continue;
        this.#deviceSessions.delete(msg.sid);
        for (const handler of [...this.#unsolicited]) {
          try {
            handler({ kind: m.kind, payload: whole });
          } catch (err) {
            this.#log.error("unsolicited message handler threw", { error: errorMessage(err) });
          }
        }
      }
    } catch (err) {
      this.#deviceSessions.delete(msg.sid);
      this.#log.warn("dropping a bad device message", {
        device: this.#link.device,
        sid: msg.sid,
        error: errorMessage(err),
      });
    }
  }
}
