/**
 * aranya's session-layer message counters (`aranya_link_messages_total`
 * from its /metrics), and what moved between two readings, per transport.
 */

/** Counts by transport, then direction ("sent" | "received"), then kind. */
export type LinkMessages = Record<
  string,
  { sent: Record<string, number>; received: Record<string, number> }
>;

/** Parses `aranya_link_messages_total{transport,direction,kind}` samples from Prometheus text. */
export function parseLinkMessages(text: string): LinkMessages {
  const out: LinkMessages = {};
  const re =
    /^aranya_link_messages_total\{transport="([^"]+)",direction="([^"]+)",kind="([^"]+)"\} (\d+(?:\.\d+)?)$/gm;
  for (const m of text.matchAll(re)) {
    const t = out[m[1]!] ??= { sent: {}, received: {} };
    if (m[2] === "sent" || m[2] === "received") t[m[2]][m[3]!] = Number(m[4]);
  }
  return out;
}

/** Reads aranya's counters from its metrics port on 127.0.0.1. */
export async function readLinkMessages(httpPort: number): Promise<LinkMessages> {
  const r = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
  if (!r.ok) throw new Error(`aranya's /metrics answered ${r.status}`);
  return parseLinkMessages(await r.text());
}

/** What moved from `before` to `after` for `transport` (kinds that did not move are left out). */
export function linkMessagesDelta(
  before: LinkMessages,
  after: LinkMessages,
  transport: string,
): { sent: Record<string, number>; received: Record<string, number> } {
  const out = { sent: {} as Record<string, number>, received: {} as Record<string, number> };
  for (const dir of ["sent", "received"] as const) {
    for (const [kind, n] of Object.entries(after[transport]?.[dir] ?? {})) {
      const d = n - (before[transport]?.[dir][kind] ?? 0);
      if (d !== 0) out[dir][kind] = d;
    }
  }
  return out;
}
