/**
 * A ReadableStream opened on its first read, canceled with its signal: how
 * logs and stats streams of the engine are handed out before any request.
 *
 * @module
 */
import { CanceledError } from "@aranya/common/errors";

/**
 * A stream opened on first read by `open`. Canceling it, or aborting
 * `signal`, aborts `open`'s signal (and with it the HTTP request) and cancels
 * the opened stream; an abort errors the stream with CanceledError.
 */
export function lazyStream<T>(
  what: string,
  signal: AbortSignal | undefined,
  open: (signal: AbortSignal) => Promise<ReadableStream<T>>,
): ReadableStream<T> {
  const ac = new AbortController();
  let reader: ReadableStreamDefaultReader<T> | undefined;
  let finished = false;
  let controller!: ReadableStreamDefaultController<T>;
  const finish = () => {
    finished = true;
    signal?.removeEventListener("abort", onAbort);
  };
  const onAbort = () => {
    if (finished) return;
    finish();
    controller.error(new CanceledError(`${what} was canceled`));
    ac.abort();
    reader?.cancel().catch(() => {});
  };
  return new ReadableStream<T>({
    start(c) {
      controller = c;
      if (signal?.aborted) onAbort();
      else signal?.addEventListener("abort", onAbort, { once: true });
    },
    async pull(c) {
      try {
        if (!reader) {
          const stream = await open(ac.signal);
          if (finished) {
            await stream.cancel().catch(() => {});
            return;
          }
          reader = stream.getReader();
        }
        const r = await reader.read();
        if (finished) return;
        if (r.done) {
          finish();
          c.close();
        } else {
          c.enqueue(r.value);
        }
      } catch (err) {
        if (finished) return;
        finish();
        c.error(err);
      }
    },
    async cancel(reason) {
      finish();
      ac.abort();
      await reader?.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}
