/** The role deploy uses to act on one device host: run commands, copy files. */

/** Result of one remote command. */
export interface RemoteResult {
  /**
   * Exit code; 128+n when the command was killed by signal n (as a shell
   * reports it), -1 when the server reported neither (for example, the
   * channel closed early).
   */
  code: number;
  /** Its standard output, decoded as UTF-8. */
  stdout: string;
  /** Its standard error, decoded as UTF-8. */
  stderr: string;
}

/**
 * A connected device host (one SSH connection).
 *
 * Concurrency: `exec`, `upload` and `writeFile` may be called concurrently;
 * each `exec` opens its own channel and the file operations share one SFTP
 * channel. Servers cap the channels open at once per connection (OpenSSH's
 * `MaxSessions`, 10 by default), so keep fewer concurrent `exec` calls than
 * that. Two concurrent writes to the same remote path leave it undefined.
 * After `close()` every pending or later call rejects.
 */
export interface RemoteHost {
  /** "user@host:port", for messages. */
  readonly label: string;
  /**
   * Runs `command` through the remote user's shell; resolves with its exit
   * code and output (UTF-8); rejects only when the connection fails, never
   * for a non-zero exit. When `signal` aborts, the call rejects at once with
   * CanceledError, the command is sent SIGKILL and its channel is closed; a
   * server may ignore the signal (OpenSSH does in root sessions), so the
   * command may run on: bound long commands remotely (`timeout 60 ...`).
   * `stdin` is written then closed; without it the command's stdin is closed
   * at once. Output is buffered in memory: meant for short commands.
   */
  exec(command: string, opts?: { stdin?: Uint8Array; signal?: AbortSignal }): Promise<RemoteResult>;
  /**
   * Streams the local file `localPath` to `remotePath` (over SFTP), creating
   * or truncating it with `mode`; does not create folders. The file is never
   * held in memory whole. Rejects with a message naming both paths.
   */
  upload(localPath: string, remotePath: string, mode: number): Promise<void>;
  /**
   * Writes `data` to `remotePath` with `mode` (small files: configs, tokens),
   * creating or truncating it; does not create folders. The mode is set
   * before any data is written, so a secret is never readable by others.
   */
  writeFile(remotePath: string, data: Uint8Array, mode: number): Promise<void>;
  /** Ends the connection. Idempotent. */
  close(): Promise<void>;
}
