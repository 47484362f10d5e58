/**
 * Host management through the virtual pod's `host` container: exec, attach
 * (a host shell), logs of host files and port-forward to host ports. Each is
 * off unless arhat's config turns it on, and refused with a clear error when
 * off.
 *
 * Host commands run through `/bin/sh -c` (the only program arhat's permission
 * set may start), so the config switch, not the permission set, is the gate.
 * A terminal (tty) is not available: Deno cannot allocate a pseudo-terminal.
 */
import { ForbiddenError, InvalidInputError, NotSupportedError } from "@aranya/common/errors";
import type { StreamContext } from "@aranya/common/session/session_server";
import type { ExecCmd } from "@aranya/proto/gen/aranya/stream_pb";
import { spliceTcp } from "./tcp_splice.ts";
import { shellQuote } from "@aranya/common/shell_quote";

/** What host management may do (arhat config `host`). */
export interface HostPolicy {
  allowExec: boolean;
  allowAttach: boolean;
  allowLogs: boolean;
  allowPortForward: boolean;
  /** Folder whose files `logs` may read (default /var/log). */
  logDir: string;
}

function refuse(what: string, key: string): never {
  throw new ForbiddenError(
    `Host ${what} is turned off on this device; set "host.${key}: true" in arhat's config to allow it`,
  );
}

/** The host side of the virtual pod. */
export interface HostManagement {
  exec(ctx: StreamContext, cmd: ExecCmd): Promise<number>;
  logs(ctx: StreamContext, path: string, follow: boolean): Promise<number>;
  portForward(ctx: StreamContext, port: number): Promise<number>;
}

/** Host management handlers, gated by `policy`. */
export function hostManagement(policy: HostPolicy): HostManagement {
  return {
    async exec(ctx: StreamContext, cmd: ExecCmd): Promise<number> {
      const attach = cmd.command.length === 0;
      if (attach ? !policy.allowAttach : !policy.allowExec) {
        refuse(attach ? "attach" : "exec", attach ? "allowAttach" : "allowExec");
      }
      if (cmd.tty) throw new NotSupportedError("Host exec with a terminal (tty) is not supported");
      const script = attach ? "exec /bin/sh -i" : cmd.command.map(shellQuote).join(" ");
      const child = new Deno.Command("/bin/sh", {
        args: ["-c", script],
        env: cmd.env,
        stdin: cmd.stdin ? "piped" : "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const onAbort = () => {
        try {
          child.kill("SIGKILL");
        } catch { /* exited */ }
      };
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      await ctx.ready();
      const pumps: Promise<void>[] = [
        (async () => {
          for await (const c of child.stdout) await ctx.stdout(c);
        })(),
        (async () => {
          for await (const c of child.stderr) await ctx.stderr(c);
        })(),
      ];
      if (cmd.stdin) {
        ctx.input.pipeTo(child.stdin).catch(() => {});
      }
      const status = await child.status;
      await Promise.allSettled(pumps);
      ctx.signal.removeEventListener("abort", onAbort);
      return status.code;
    },

    async logs(ctx: StreamContext, path: string, follow: boolean): Promise<number> {
      if (!policy.allowLogs) refuse("logs", "allowLogs");
      const rel = path.replace(/^\/+/, "");
      if (!rel || rel.split("/").includes("..")) {
        throw new InvalidInputError(
          `Host log path "${path}" must name a file under "${policy.logDir}"`,
        );
      }
      const file = await Deno.open(`${policy.logDir}/${rel}`, { read: true });
      await ctx.ready();
      const buf = new Uint8Array(64 * 1024);
      try {
        while (!ctx.signal.aborted) {
          const n = await file.read(buf);
          if (n === null) {
            if (!follow) break;
            await new Promise((r) => setTimeout(r, 250));
            continue;
          }
          await ctx.stdout(buf.slice(0, n));
        }
      } finally {
        file.close();
      }
      return 0;
    },

    async portForward(ctx: StreamContext, port: number): Promise<number> {
      if (!policy.allowPortForward) refuse("port-forward", "allowPortForward");
      return await spliceTcp(await Deno.connect({ hostname: "127.0.0.1", port }), ctx);
    },
  };
}
