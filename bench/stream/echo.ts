/**
 * Timed line echoes through one interactive session (`cat` at the far end):
 * write a short line, wait until it comes back on stdout, measure. The
 * session is anything with a byte sink and a stdout byte stream: a
 * `kubectl exec -i ... -- cat` child or an engine exec hijacked directly.
 */

/** An interactive session whose far end echoes its input. */
export interface EchoSession {
  /** The session's stdout bytes. */
  readonly stdout: ReadableStream<Uint8Array>;
  write(data: Uint8Array): Promise<void>;
  /** Stops the session and releases everything (idempotent). */
  close(): Promise<void>;
}

/** Reads a session's stdout and resolves waits for text to appear in it. */
export class EchoTimer {
  #buf = "";
  #ended = false;
  #waiter?: { text: string; resolve: () => void; reject: (e: Error) => void };
  readonly #pump: Promise<void>;
  readonly #enc = new TextEncoder();

  constructor(private readonly session: EchoSession) {
    const dec = new TextDecoder();
    this.#pump = (async () => {
      try {
        for await (const chunk of session.stdout) {
          this.#buf += dec.decode(chunk, { stream: true });
          this.#check();
        }
      } catch { /* closed under us */ }
      this.#ended = true;
      this.#waiter?.reject(new Error("The session's output ended"));
      this.#waiter = undefined;
    })();
  }

  #check(): void {
    const w = this.#waiter;
    if (!w) return;
    const at = this.#buf.indexOf(w.text);
    if (at < 0) return;
    this.#buf = this.#buf.slice(at + w.text.length);
    this.#waiter = undefined;
    w.resolve();
  }

  /** Writes `line` + "\n" and resolves with the ms until it came back (throws after `timeoutMs`). */
  async roundTrip(line: string, timeoutMs = 10_000): Promise<number> {
    if (this.#ended) throw new Error("The session's output ended");
    const text = `${line}\n`;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const back = new Promise<void>((resolve, reject) => {
      this.#waiter = { text, resolve, reject };
      timer = setTimeout(
        () => reject(new Error(`No echo of "${line}" within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    const t0 = performance.now();
    try {
      await this.session.write(this.#enc.encode(text));
      this.#check();
      await back;
      return performance.now() - t0;
    } finally {
      clearTimeout(timer);
      this.#waiter = undefined;
    }
  }

  /** `warmup` untimed round trips, then `count` timed ones (ms each). */
  async run(count: number, warmup: number, tag: string): Promise<number[]> {
    for (let i = 0; i < warmup; i++) await this.roundTrip(`${tag} warmup ${i}`, 60_000);
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(await this.roundTrip(`${tag} ${i}`));
    return out;
  }

  /** Closes the session and waits for its output to end. */
  async close(): Promise<void> {
    await this.session.close();
    await this.#pump;
  }
}
