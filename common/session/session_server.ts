/**
 * The arhat side of the session layer: answers aranya's commands over one
 * Link by dispatching them to handlers, and starts sessions of its own for
 * unsolicited messages (pod status changes).
 *
 * - A unary handler resolves with one reply message, or throws a domain error
 *   that becomes MSG_ERROR.
 * - A stream handler gets a context to signal readiness (MSG_STREAM_CONTINUE),
 *   write stdout/stderr, read input and resize events; it resolves with an exit
 *   code (MSG_DONE) or throws (MSG_ERROR, ExitCodeError carries the code).
 * - CMD_SESSION_CLOSE, a failed session or a lost link abort the handler's
 *   signal.
 * - Flow control (link.proto): when the stream command names an output
 *   window, MSG_STREAM_CONTINUE says this side honours it, and output waits
 *   while the window aranya granted is used up.
 *
 * A frame that does not decode closes the link; a frame that breaks a
 * session's rules fails only that session.
 */
import {
  CmdKind,
  decodeCmd,
  decodeReject,
  encodeMsg,
  ENVELOPE_OVERHEAD,
  MsgKind,
} from "../envelope.ts";
import type { Cmd } from "@aranya/proto/gen/aranya/link_pb";
import {
  CanceledError,
  errorMessage,
  ExitCodeError,
  InvalidInputError,
  NotSupportedError,
  ProtocolError,
  UnavailableError,
} from "../errors.ts";
import type { Link } from "../link.ts";
import { type Logger, nullLogger } from "../log.ts";
import { chunk, MessageAssembler } from "./assembler.ts";
import { encodeError } from "./error_map.ts";
import { decodeResize, decodeWindow, encodeContinue, encodeDone } from "./payloads.ts";
import { Sequencer } from "./sequencer.ts";
import { DEVICE_SID_BIT } from "./session_client.ts";

/** A command as handlers see it. */
export interface Command {
  kind: CmdKind;
  sid: bigint;
  payload: Uint8Array;
  /** Aborts when aranya closes the session or the link drops. */
  signal: AbortSignal;
}

/** Answers a unary command with one message. */
export type UnaryHandler = (cmd: Command) => Promise<{ kind: MsgKind; payload: Uint8Array }>;

/** What a stream handler works with. */
export interface StreamContext extends Command {
  /** Sends MSG_STREAM_CONTINUE (once): aranya may now send input. */
  ready(): Promise<void>;
  /**
   * Sends output; resolves when the link accepted it (under flow control, after aranya's window
   * let it go: a slow client slows the handler). Rejects with CanceledError once the session ended.
   */
  stdout(data: Uint8Array): Promise<void>;
  stderr(data: Uint8Array): Promise<void>;
  /** Input bytes (stdin, port-forward upstream); ends at aranya's end of input. */
  readonly input: ReadableStream<Uint8Array>;
  /** Registers the terminal resize handler. */
  onResize(handler: (size: { cols: number; rows: number }) => void): void;
}

/** Runs a stream session; resolves with the exit code. */
export type StreamHandler = (ctx: StreamContext) => Promise<number | void>;

/** Where commands go. */
export interface Dispatcher {
  /** The handler for `kind`, or undefined when it is not supported. */
  handler(kind: CmdKind): { unary: UnaryHandler } | { stream: StreamHandler } | undefined;
}

/** Options for {@link SessionServer}. */
export interface SessionServerOptions {
  dispatcher: Dispatcher;
  /** Most sessions at once (default 4096); more are refused with MSG_ERROR. */
  maxSessions?: number;
  /** Largest reassembled command, bytes (default 64 MiB). */
  maxMessageBytes?: number;
  log?: Logger;
}

interface ServerSession {
  sid: bigint;
  sequencer: Sequencer<Cmd>;
  asm: MessageAssembler;
  nextSeq: bigint;
  abort: AbortController;
  started: boolean;
  ended: boolean;
  input?: ReadableStreamDefaultController<Uint8Array>;
  inputDone: boolean;
  onResize?: (size: { cols: number; rows: number }) => void;
  /**
   * Output bytes this session may still send (flow control, link.proto): set from the stream
   * command's output window, raised by CMD_STREAM_WINDOW; undefined: no flow control.
   */
  window?: number;
  /** Output waiting for a window (stdout and stderr may both wait). */
  waiters?: (() => void)[];
  /** MSG_STREAM_CONTINUE sent (it says whether this side honours the window). */
  readySent?: boolean;
}

/** Largest window a device keeps (grants beyond it are capped): 1 GiB. */
const MAX_WINDOW = 1 << 30;

/** Arhat's view of the sessions over one link. */
export class SessionServer {
  readonly #link: Link;
  readonly #dispatcher: Dispatcher;
  readonly #log: Logger;
  readonly #maxSessions: number;
  readonly #maxMessageBytes: number;
  readonly #maxChunk: number;
  readonly #sessions = new Map<bigint, ServerSession>();
  #nextDeviceSid = DEVICE_SID_BIT | BigInt(1 + Math.floor(Math.random() * 0xffff_ffff));
  #closed = false;
  #onReject: (err: Error) => void = () => {};

  constructor(link: Link, opts: SessionServerOptions) {
    this.#link = link;
    this.#dispatcher = opts.dispatcher;
    this.#log = opts.log ?? nullLogger;
    this.#maxSessions = opts.maxSessions ?? 4096;
    this.#maxMessageBytes = opts.maxMessageBytes ?? 64 * 1024 * 1024;
    this.#maxChunk = link.maxFrameSize - ENVELOPE_OVERHEAD;
    if (this.#maxChunk < 16) {
      throw new InvalidInputError(`Link frame size ${link.maxFrameSize} is too small`);
    }
  }

  /** Starts receiving. Call once. */
  start(): void {
    this.#link.start((frame) => this.#receive(frame));
    this.#link.closed.then(() => {
      this.#closed = true;
      for (const s of this.#sessions.values()) this.#abort(s, "link closed");
      this.#sessions.clear();
    });
  }

  /** Called when aranya rejects the link after it was accepted. */
  onReject(handler: (err: Error) => void): void {
    this.#onReject = handler;
  }

  /** Number of sessions in flight. */
  get activeSessions(): number {
    return this.#sessions.size;
  }

  /**
   * Sends a message aranya did not ask for (a pod status change) on a new
   * device session. Rejects with UnavailableError when the link is closed.
   */
  publish(kind: MsgKind, payload: Uint8Array): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new UnavailableError("Link to aranya is closed"));
    }
    const sid = this.#nextDeviceSid;
    this.#nextDeviceSid = this.#nextDeviceSid + 1n > 0xffff_ffff_ffff_ffffn
      ? DEVICE_SID_BIT | 1n
      : this.#nextDeviceSid + 1n;
    return this.#sendMessage({ sid, nextSeq: 0n }, kind, payload);
  }

  #send(
    s: { sid: bigint; nextSeq: bigint },
    kind: MsgKind,
    payload: Uint8Array,
    complete: boolean,
  ): Promise<void> {
    return this.#link.send(encodeMsg({ kind, sid: s.sid, seq: s.nextSeq++, complete, payload }));
  }

  #sendMessage(s: { sid: bigint; nextSeq: bigint }, kind: MsgKind, payload: Uint8Array) {
    const parts = chunk(payload, this.#maxChunk);
    let last: Promise<void> = Promise.resolve();
    for (let i = 0; i < parts.length; i++) {
      last.catch(() => {});
      last = this.#send(s, kind, parts[i]!, i === parts.length - 1);
    }
    return last;
  }

  /**
   * Sends MSG_STREAM_CONTINUE once; with flow control its payload says this side honours the
   * window (an empty one, as from devices before it, says it does not).
   */
  #ready(s: ServerSession): Promise<void> {
    if (s.readySent || s.ended) return Promise.resolve();
    s.readySent = true;
    return this.#send(s, MsgKind.MSG_STREAM_CONTINUE, encodeContinue(s.window !== undefined), true);
  }

  /**
   * Sends output in chunks. Under flow control a chunk goes at once while the window is open and
   * takes its size from it (the last one may overdraw it, by at most one chunk); otherwise it
   * waits for a grant. aranya grants only after it heard that this side honours the window, so
   * MSG_STREAM_CONTINUE goes first (queued now, in order before the data).
   */
  async #sendData(s: ServerSession, kind: MsgKind, data: Uint8Array): Promise<void> {
    if (s.ended) throw new CanceledError(`Session ${s.sid} has ended`);
    if (s.window !== undefined) this.#ready(s).catch(() => {});
    let last: Promise<void> = Promise.resolve();
    for (const p of chunk(data, this.#maxChunk)) {
      if (s.window !== undefined) {
        if (s.window <= 0) {
          await this.#windowOpen(s);
          if (s.ended) throw new CanceledError(`Session ${s.sid} has ended`);
        }
        s.window -= p.byteLength;
      }
      last.catch(() => {});
      last = this.#send(s, kind, p, false);
    }
    return await last;
  }

  /** Ends a session with a final message (MSG_DONE or MSG_ERROR). */
  #end(s: ServerSession, kind: MsgKind, payload: Uint8Array): void {
    if (s.ended) return;
    s.ended = true;
    this.#sessions.delete(s.sid);
    this.#closeInput(s);
    this.#wake(s);
    if (!this.#closed) this.#sendMessage(s, kind, payload).catch(() => {});
  }

  #abort(s: ServerSession, reason: string): void {
    s.ended = true;
    this.#sessions.delete(s.sid);
    if (!s.abort.signal.aborted) s.abort.abort(new CanceledError(reason));
    this.#closeInput(s);
    this.#wake(s);
  }

  #wake(s: ServerSession): void {
    const waiters = s.waiters;
    s.waiters = undefined;
    for (const w of waiters ?? []) w();
  }

  /** Waits until `s` may send output (its window is open), or it ended. */
  async #windowOpen(s: ServerSession): Promise<void> {
    while (s.window !== undefined && s.window <= 0 && !s.ended && !s.abort.signal.aborted) {
      await new Promise<void>((resolve) => (s.waiters ??= []).push(resolve));
    }
  }

  #closeInput(s: ServerSession): void {
    if (s.inputDone) return;
    s.inputDone = true;
    try {
      s.input?.close();
    } catch { /* already closed or canceled */ }
  }

  #receive(frame: Uint8Array): void {
    let cmd: Cmd;
    try {
      cmd = decodeCmd(frame);
    } catch (err) {
      this.#log.warn("closing link after a malformed frame", { error: errorMessage(err) });
      this.#link.close(new ProtocolError("malformed frame"));
      return;
    }
    if (cmd.sid === 0n) {
      if (cmd.kind === CmdKind.CMD_REJECT) {
        const { error } = decodeReject(cmd.payload);
        this.#log.warn("aranya rejected the link", { error: error.message });
        this.#onReject(error);
        this.#link.close("rejected by aranya");
      }
      return;
    }
    let s = this.#sessions.get(cmd.sid);
    if (!s) {
      if (
        cmd.kind === CmdKind.CMD_SESSION_CLOSE || cmd.kind === CmdKind.CMD_DATA_UPSTREAM ||
        cmd.kind === CmdKind.CMD_STREAM_WINDOW
      ) {
        return; // for a session that already ended
      }
      s = {
        sid: cmd.sid,
        sequencer: new Sequencer<Cmd>(),
        asm: new MessageAssembler(this.#maxMessageBytes),
        nextSeq: 0n,
        abort: new AbortController(),
        started: false,
        ended: false,
        inputDone: false,
      };
      if (this.#sessions.size >= this.#maxSessions) {
        this.#sendMessage(
          s,
          MsgKind.MSG_ERROR,
          encodeError(new UnavailableError(`Too many sessions (limit ${this.#maxSessions})`)),
        ).catch(() => {});
        return;
      }
      this.#sessions.set(cmd.sid, s);
    }
    try {
      for (const c of s.sequencer.push(cmd)) {
        if (s.ended) break;
        this.#onFrame(s, c);
      }
    } catch (err) {
      this.#log.warn("session failed on a bad frame", { sid: s.sid, error: errorMessage(err) });
      s.abort.abort(err);
      this.#end(s, MsgKind.MSG_ERROR, encodeError(err));
    }
  }

  #onFrame(s: ServerSession, cmd: Cmd): void {
    switch (cmd.kind) {
      case CmdKind.CMD_SESSION_CLOSE:
        this.#abort(s, "closed by aranya");
        return;
      case CmdKind.CMD_DATA_UPSTREAM:
        if (!s.started) throw new ProtocolError("Input arrived before the command");
        if (cmd.payload.byteLength && !s.inputDone) s.input?.enqueue(cmd.payload);
        if (cmd.complete) this.#closeInput(s);
        return;
      case CmdKind.CMD_TTY_RESIZE:
        if (!s.started) throw new ProtocolError("A resize arrived before the command");
        s.onResize?.(decodeResize(cmd.payload));
        return;
      case CmdKind.CMD_STREAM_WINDOW: {
        if (!s.started) throw new ProtocolError("A window grant arrived before the command");
        const bytes = decodeWindow(cmd.payload);
        if (s.window !== undefined) s.window = Math.min(MAX_WINDOW, s.window + bytes);
        this.#wake(s);
        return;
      }
    }
    if (!s.started && s.window === undefined && cmd.outputWindow > 0) s.window = cmd.outputWindow;
    if (s.started) {
      throw new ProtocolError(`Unexpected command kind ${CmdKind[cmd.kind]} inside a session`);
    }
    const whole = s.asm.push(cmd.kind, cmd.payload, cmd.complete);
    if (whole === undefined) return;
    s.started = true;
    this.#dispatch(s, cmd.kind, whole);
  }

  #dispatch(s: ServerSession, kind: CmdKind, payload: Uint8Array): void {
    const h = this.#dispatcher.handler(kind);
    const base: Command = { kind, sid: s.sid, payload, signal: s.abort.signal };
    if (!h) {
      this.#end(
        s,
        MsgKind.MSG_ERROR,
        encodeError(
          new NotSupportedError(`Command ${CmdKind[kind] ?? kind} is not supported by this device`),
        ),
      );
      return;
    }
    if ("unary" in h) {
      h.unary(base).then(
        (reply) => {
          if (s.ended) return;
          s.ended = true;
          this.#sessions.delete(s.sid);
          this.#sendMessage(s, reply.kind, reply.payload).catch(() => {});
        },
        (err) => this.#end(s, MsgKind.MSG_ERROR, encodeError(err)),
      );
      return;
    }
    const input = new ReadableStream<Uint8Array>({
      start: (c) => {
        s.input = c;
      },
      cancel: () => {
        s.inputDone = true;
      },
    }, { highWaterMark: 1024 });
    const ctx: StreamContext = {
      ...base,
      input,
      ready: () => this.#ready(s),
      stdout: (data) => this.#sendData(s, MsgKind.MSG_DATA_STDOUT, data),
      stderr: (data) => this.#sendData(s, MsgKind.MSG_DATA_STDERR, data),
      onResize: (handler) => {
        s.onResize = handler;
      },
    };
    h.stream(ctx).then(
      (code) => {
        const exit = code ?? 0;
        if (exit !== 0) this.#end(s, MsgKind.MSG_ERROR, encodeError(new ExitCodeError(exit)));
        else this.#end(s, MsgKind.MSG_DONE, encodeDone(0));
      },
      (err) => this.#end(s, MsgKind.MSG_ERROR, encodeError(err)),
    );
  }
}
