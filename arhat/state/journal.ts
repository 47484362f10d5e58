/**
 * `PodJournal`: the pods arhat was told to run, kept on disk so a restarted
 * agent without a link to aranya still knows what it should be running
 * (offline autonomy, DESIGN.md section 4).
 *
 * One file per pod under `<stateDir>/journal/pods/`, named after the pod uid,
 * holding the `PodEnsureCmd` bytes exactly as received, wrapped in a
 * checksummed record (`record.ts`) and replaced atomically
 * (`atomic_file.ts`). On open, temp files of interrupted writes are removed
 * and files that fail their checksum or do not decode are logged, renamed to
 * `*.corrupt` and skipped: a damaged journal never stops the agent.
 *
 * Writes are serialised, so the last `put`/`delete` called for a uid is the
 * one on disk. Not safe for two processes on the same directory.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { errorMessage, InvalidInputError } from "@aranya/common/errors";
import { type Logger, nullLogger } from "@aranya/common/log";
import { PodEnsureCmdSchema } from "@aranya/proto/gen/aranya/pod_pb";
import { isTempFileName, removeFileDurable, syncDir, writeFileAtomic } from "./atomic_file.ts";
import { encodeFileKey } from "./file_key.ts";
import { quarantine } from "./quarantine.ts";
import { decodeRecord, encodeRecord } from "./record.ts";

/** Directory of the pod journal, relative to the state dir. */
export const POD_JOURNAL_DIR = "journal/pods";
const SUFFIX = ".pod";

/** Options for {@link PodJournal.open}. */
export interface PodJournalOptions {
  /** arhat's state dir; the journal lives in `<stateDir>/journal/pods` (created if missing). */
  stateDir: string;
  log?: Logger;
}

/** One journaled pod. */
export interface JournaledPod {
  uid: string;
  /** `PodEnsureCmd` bytes as given to {@link PodJournal.put}. Do not mutate. */
  bytes: Uint8Array;
}

/** The on-disk set of desired pods; see the module doc. */
export class PodJournal {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #pods = new Map<string, Uint8Array>();
  #chain: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#log = log;
  }

  /**
   * Opens (creating if needed) the journal and loads every intact pod. Removes leftover temp
   * files; renames corrupt files to `*.corrupt` after logging them. Rejects only when the
   * directory itself cannot be created or listed.
   */
  static async open(opts: PodJournalOptions): Promise<PodJournal> {
    const dir = `${opts.stateDir}/${POD_JOURNAL_DIR}`;
    const journal = new PodJournal(
      dir,
      (opts.log ?? nullLogger).with({ component: "pod-journal" }),
    );
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await journal.#load();
    return journal;
  }

  /** The journal directory. */
  get dir(): string {
    return this.#dir;
  }

  /** Number of journaled pods. */
  get size(): number {
    return this.#pods.size;
  }

  /** The `PodEnsureCmd` bytes of `uid`, if journaled. */
  get(uid: string): Uint8Array | undefined {
    return this.#pods.get(uid);
  }

  /** Every journaled pod, ordered by uid. */
  list(): JournaledPod[] {
    return [...this.#pods.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([uid, bytes]) => ({ uid, bytes }));
  }

  /**
   * Journals (or replaces) the desired pod `uid`. Resolves once the file is durable.
   *
   * @throws InvalidInputError when `bytes` is not a `PodEnsureCmd` or names another uid.
   */
  put(uid: string, bytes: Uint8Array): Promise<void> {
    let cmdUid: string;
    try {
      cmdUid = fromBinary(PodEnsureCmdSchema, bytes).uid;
    } catch (err) {
      return Promise.reject(
        new InvalidInputError(`Pod "${uid}" cannot be journaled: ${errorMessage(err)}`),
      );
    }
    if (cmdUid !== uid) {
      return Promise.reject(
        new InvalidInputError(`Pod "${uid}" cannot be journaled: its spec has uid "${cmdUid}"`),
      );
    }
    let path: string;
    let record: Uint8Array;
    try {
      path = this.#path(uid);
      record = encodeRecord({ key: uid, payload: bytes });
    } catch (err) {
      return Promise.reject(err);
    }
    const copy = bytes.slice();
    return this.#serial(async () => {
      await writeFileAtomic(path, record);
      this.#pods.set(uid, copy);
    });
  }

  /**
   * Forgets pod `uid`. Resolves once the removal is durable.
   *
   * @returns false when the pod was not journaled.
   */
  delete(uid: string): Promise<boolean> {
    let path: string;
    try {
      path = this.#path(uid);
    } catch {
      return Promise.resolve(false); // no such file can exist
    }
    return this.#serial(async () => {
      const removed = await removeFileDurable(path);
      return this.#pods.delete(uid) || removed;
    });
  }

  #path(uid: string): string {
    return `${this.#dir}/${encodeFileKey(uid)}${SUFFIX}`;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => {});
    return run;
  }

  async #load(): Promise<void> {
    let cleaned = 0;
    for await (const entry of Deno.readDir(this.#dir)) {
      if (!entry.isFile) continue;
      const path = `${this.#dir}/${entry.name}`;
      if (isTempFileName(entry.name)) {
        await Deno.remove(path).catch(() => {});
        cleaned++;
        continue;
      }
      if (!entry.name.endsWith(SUFFIX)) continue;
      try {
        const record = decodeRecord(await Deno.readFile(path));
        if (`${encodeFileKey(record.key)}${SUFFIX}` !== entry.name) {
          throw new InvalidInputError(`Record is for pod "${record.key}", not for its file name`);
        }
        const cmd = fromBinary(PodEnsureCmdSchema, record.payload);
        if (cmd.uid !== record.key) {
          throw new InvalidInputError(`Pod spec has uid "${cmd.uid}", record says "${record.key}"`);
        }
        this.#pods.set(record.key, record.payload);
      } catch (err) {
        await quarantine(path, err, this.#log);
      }
    }
    if (cleaned > 0) {
      await syncDir(this.#dir);
      this.#log.info("removed temp files of interrupted writes", { count: cleaned });
    }
    this.#log.debug("pod journal loaded", { dir: this.#dir, pods: this.#pods.size });
  }
}
