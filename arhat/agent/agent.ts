/**
 * arhat's dispatch table: one entry per command kind, each handled in its own
 * file (`handle_*.ts`). Kinds without an entry are answered "not supported" by
 * the session layer.
 */
import type { CmdKind } from "@aranya/common/envelope";
import type {
  Dispatcher,
  StreamHandler,
  UnaryHandler,
} from "@aranya/common/session/session_server";

/** A handler for one command kind. */
export type Handler = { unary: UnaryHandler } | { stream: StreamHandler };

/** The dispatch table. */
export class Agent implements Dispatcher {
  readonly #table = new Map<CmdKind, Handler>();

  /** Registers the handlers of one command family. Later entries replace earlier ones. */
  register(entries: Iterable<[CmdKind, Handler]>): this {
    for (const [kind, h] of entries) this.#table.set(kind, h);
    return this;
  }

  handler(kind: CmdKind): Handler | undefined {
    return this.#table.get(kind);
  }

  /** The kinds this agent answers. */
  get kinds(): CmdKind[] {
    return [...this.#table.keys()];
  }
}
