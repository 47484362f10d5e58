/**
 * Service account tokens of pods' projected volumes, cached per pod and
 * refreshed as the kubelet's token manager does: a token is requested once
 * (TokenRequest, bound to the pod) and served from the cache until 80% of
 * its lifetime passed or it is 24 hours old, whichever comes first; then the
 * next resolution requests a new one (and the device gets the new file). A
 * refresh that fails keeps serving the old token while it is still valid.
 * The pod's tokens are dropped with the pod (`forget`).
 *
 * @module
 */
import type { PodSources } from "./resolve.ts";

/** What a token is requested for (the resolver's request). */
export type TokenRequest = Parameters<PodSources["serviceAccountToken"]>[0];

/** A token the API server issued. */
export interface IssuedToken {
  token: string;
  /**
   * Its lifetime as the API server granted it (the answer's
   * spec.expirationSeconds; it may cap the request); absent: as requested.
   * Counted from the moment it was requested on this side's clock, so clock
   * skew with the API server does not matter (the kubelet too derives the
   * issue time from the lifetime).
   */
  ttlSeconds?: number;
}

/** Options for {@link TokenCache}. */
export interface TokenCacheOptions {
  /** Requests a token (TokenRequest); throws on failure. */
  mint: (req: TokenRequest) => Promise<IssuedToken>;
  /** Clock, ms (default Date.now). */
  now?: () => number;
}

/** After a failed refresh, the next attempt (while the old token is valid). */
export const TOKEN_RETRY_MS = 10_000;

/** The kubelet's longest time between refreshes of one token. */
export const TOKEN_MAX_AGE_MS = 24 * 3600_000;

/**
 * When a token issued at `issuedAt` and expiring at `expiresAt` (ms) is to be
 * replaced: at 80% of its lifetime, or 24 hours after issue if sooner.
 */
export function tokenRefreshAt(issuedAt: number, expiresAt: number): number {
  const ttl = Math.max(0, expiresAt - issuedAt);
  return issuedAt + Math.min(ttl * 0.8, TOKEN_MAX_AGE_MS);
}

interface Entry {
  token: string;
  issuedAt: number;
  expiresAt: number;
  refreshAt: number;
}

/** Per-pod cache of projected service account tokens. */
export class TokenCache {
  readonly #o: TokenCacheOptions;
  readonly #now: () => number;
  /** Pod uid -> token key -> token. */
  readonly #pods = new Map<string, Map<string, Entry>>();
  /** Requests in flight, by pod uid and token key (concurrent resolutions share one). */
  readonly #inflight = new Map<string, Promise<string>>();
  #minted = 0;

  constructor(opts: TokenCacheOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** TokenRequests made so far. */
  get minted(): number {
    return this.#minted;
  }

  /** The pod's token for `req`: cached, or requested when there is none or it is due. */
  get(req: TokenRequest): Promise<string> {
    const uid = req.pod.uid;
    const key = JSON.stringify([
      req.namespace,
      req.serviceAccount,
      [...req.audiences].sort(),
      req.expirationSeconds,
    ]);
    const cached = this.#pods.get(uid)?.get(key);
    const now = this.#now();
    if (cached && now < cached.refreshAt) return Promise.resolve(cached.token);
    const flight = `${uid}\n${key}`;
    let p = this.#inflight.get(flight);
    if (!p) {
      p = this.#mint(req, uid, key, cached).finally(() => this.#inflight.delete(flight));
      this.#inflight.set(flight, p);
    }
    return p;
  }

  async #mint(req: TokenRequest, uid: string, key: string, old?: Entry): Promise<string> {
    const issuedAt = this.#now();
    let issued: IssuedToken;
    try {
      this.#minted++;
      issued = await this.#o.mint(req);
    } catch (err) {
      // The kubelet keeps a token that is still valid when its refresh fails; tried again in a
      // while, not on every resolution.
      if (old && this.#now() < old.expiresAt) {
        old.refreshAt = Math.min(old.expiresAt, this.#now() + TOKEN_RETRY_MS);
        return old.token;
      }
      throw err;
    }
    const expiresAt = issuedAt + (issued.ttlSeconds ?? req.expirationSeconds) * 1000;
    let tokens = this.#pods.get(uid);
    if (!tokens) this.#pods.set(uid, tokens = new Map());
    tokens.set(key, {
      token: issued.token,
      issuedAt,
      expiresAt,
      refreshAt: tokenRefreshAt(issuedAt, expiresAt),
    });
    return issued.token;
  }

  /** The earliest time one of the pod's tokens is due for refresh (ms), if it has any. */
  nextRefresh(uid: string): number | undefined {
    const tokens = this.#pods.get(uid);
    if (!tokens?.size) return undefined;
    return Math.min(...[...tokens.values()].map((e) => e.refreshAt));
  }

  /** Drops the pod's tokens (the pod is gone). */
  forget(uid: string): void {
    this.#pods.delete(uid);
  }

  /** Pods with cached tokens. */
  get size(): number {
    return this.#pods.size;
  }
}
