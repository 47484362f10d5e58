/**
 * `StatusQueue`: pod status changes made while aranya was unreachable, kept on
 * disk until they have been delivered (offline autonomy, DESIGN.md section 4).
 *
 * Only the latest status of each pod uid is kept: enqueuing a status for a uid
 * that is already queued replaces it and moves it to the end, so the queue is
 * in the order the kept statuses arrived. Each entry is one checksummed record
 * file under `<stateDir>/journal/status/`, named `<seq>-<uid>.status` with a
 * 16-digit sequence number that gives the order after a restart. A
 * replacement writes the new file before removing the old one; if a crash
 * leaves both, the higher sequence number wins on open.
 *
 * {@link StatusQueue.drain} sends entries oldest first and removes each only
 * after its send resolved. While a drain runs, new statuses should still go
 * through {@link StatusQueue.enqueue} (the drain picks them up), so that an
 * older queued status is never delivered after a newer one.
 */
import { errorMessage, InvalidInputError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { isTempFileName, removeFileDurable, syncDir, writeFileAtomic } from "./atomic_file.ts";
import { encodeFileKey } from "./file_key.ts";
import { quarantine } from "./quarantine.ts";
import { decodeRecord, encodeRecord } from "./record.ts";

/** Directory of the status queue, relative to the state dir. */
export const STATUS_QUEUE_DIR = "journal/status";
const FILE_NAME = /^(\d{16})-([A-Za-z0-9_%-]+)\.status$/;

/** Options for {@link StatusQueue.open}. */
export interface StatusQueueOptions {
  /** arhat's state dir; the queue lives in `<stateDir>/journal/status` (created if missing). */
  stateDir: string;
  log?: Logger;
}

/** One queued status. */
export interface QueuedStatus {
  /** The pod the status is about. */
  uid: string;
  /** The status message bytes as given to {@link StatusQueue.enqueue}. Do not mutate. */
  bytes: Uint8Array;
}

/** Sends one status to aranya; resolves when it was sent, rejects when it was not. */
export type StatusSender = (bytes: Uint8Array, uid: string) => Promise<void>;

interface Entry {
  seq: number;
  bytes: Uint8Array;
}

/** The on-disk queue of undelivered pod statuses; see the module doc. */
export class StatusQueue {
  readonly #dir: string;
  readonly #log: Logger;
  /** Insertion order is queue order. */
  readonly #entries = new Map<string, Entry>();
  #nextSeq = 1;
  #chain: Promise<unknown> = Promise.resolve();
  #drain: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log;
  }

  /**
   * Opens (creating if needed) the queue and loads every intact entry in order. Removes temp
   * files of interrupted writes and entries superseded by a newer one for the same uid; logs
   * corrupt files and renames them to `*.corrupt`. Rejects only when the directory itself cannot
   * be created or listed.
   */
  static async open(opts: StatusQueueOptions): Promise<StatusQueue> {
    const dir = `${opts.stateDir}/${STATUS_QUEUE_DIR}`;
    const queue = new StatusQueue(
      dir,
      (opts.log ?? nullLogger).with({ component: "status-queue" }),
    );
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await queue.#load();
    return queue;
  }

  /** The queue directory. */
  get dir(): string {
    return this.#dir;
  }

  /** Number of queued statuses (at most one per uid). */
  get size(): number {
    return this.#entries.size;
  }

  /** The queued statuses, oldest first. */
  entries(): QueuedStatus[] {
    return [...this.#entries].map(([uid, e]) => ({ uid, bytes: e.bytes }));
  }

  /**
   * Queues `bytes` as the latest status of pod `uid`, replacing and re-ordering an older one.
   * Resolves once the entry is durable.
   *
   * @throws InvalidInputError when `uid` is empty or too long for a file name.
   */
  enqueue(uid: string, bytes: Uint8Array): Promise<void> {
    let name: string;
    let record: Uint8Array;
    try {
      name = encodeFileKey(uid);
      record = encodeRecord({ key: uid, payload: bytes });
    } catch (err) {
      return Promise.reject(err);
    }
    const copy = bytes.slice();
    return this.#serial(async () => {
      const seq = this.#nextSeq++;
      await writeFileAtomic(`${this.#dir}/${fileName(seq, name)}`, record);
      const old = this.#entries.get(uid);
      if (old) await removeFileDurable(`${this.#dir}/${fileName(old.seq, name)}`);
      this.#entries.delete(uid);
      this.#entries.set(uid, { seq, bytes: copy });
    });
  }

  /**
   * Sends every queued status, oldest first, one at a time, until the queue is empty (statuses
   * enqueued meanwhile included). Each entry is removed only after `send` resolved for it, and
   * only if no newer status for that pod was queued during the send. Concurrent drains run one
   * after the other.
   *
   * @returns how many statuses were sent.
   * @throws whatever `send` threw, as soon as it throws: that entry and all later ones stay queued.
   */
  drain(send: StatusSender): Promise<number> {
    const run = this.#drain.then(() => this.#drainNow(send));
    this.#drain = run.catch(() => {});
    return run;
  }

  async #drainNow(send: StatusSender): Promise<number> {
    let sent = 0;
    for (;;) {
      await this.#chain; // let pending enqueues land first, so the head is current
      const head = this.#entries.entries().next();
      if (head.done) return sent;
      const [uid, entry] = head.value;
      await send(entry.bytes, uid);
      sent++;
      await this.#serial(async () => {
        if (this.#entries.get(uid)?.seq !== entry.seq) return; // superseded while sending
        await removeFileDurable(`${this.#dir}/${fileName(entry.seq, encodeFileKey(uid))}`);
        this.#entries.delete(uid);
      });
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => {});
    return run;
  }

  async #load(): Promise<void> {
    const found: { seq: number; uid: string; bytes: Uint8Array; path: string }[] = [];
    let cleaned = 0;
    for await (const entry of Deno.readDir(this.#dir)) {
      if (!entry.isFile) continue;
      const path = `${this.#dir}/${entry.name}`;
      if (isTempFileName(entry.name)) {
        await Deno.remove(path).catch(() => {});
        cleaned++;
        continue;
      }
      const m = FILE_NAME.exec(entry.name);
      if (!m) continue;
      try {
        const record = decodeRecord(await Deno.readFile(path));
        if (encodeFileKey(record.key) !== m[2]) {
          throw new InvalidInputError(`Record is for pod "${record.key}", not for its file name`);
        }
        found.push({ seq: Number(m[1]), uid: record.key, bytes: record.payload, path });
      } catch (err) {
        await quarantine(path, err, this.#log);
      }
    }
    found.sort((a, b) => a.seq - b.seq);
    for (const f of found) {
      const older = this.#entries.get(f.uid);
      if (older) {
        // A crash between writing a replacement and removing the entry it replaced.
        const olderPath = `${this.#dir}/${fileName(older.seq, encodeFileKey(f.uid))}`;
        await Deno.remove(olderPath).catch((err) =>
          this.#log.warn("cannot remove superseded status", {
            path: olderPath,
            error: errorMessage(err),
          })
        );
        cleaned++;
        this.#entries.delete(f.uid);
      }
      this.#entries.set(f.uid, { seq: f.seq, bytes: f.bytes });
      this.#nextSeq = f.seq + 1;
    }
    if (cleaned > 0) {
      await syncDir(this.#dir);
      this.#log.info("removed leftovers of interrupted writes", { count: cleaned });
    }
    this.#log.debug("status queue loaded", { dir: this.#dir, entries: this.#entries.size });
  }
}

function fileName(seq: number, encodedUid: string): string {
  return `${String(seq).padStart(16, "0")}-${encodedUid}.status`;
}
