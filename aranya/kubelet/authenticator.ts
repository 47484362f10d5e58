/**
 * Who is calling the kubelet API, decided as the kubelet decides it:
 *
 * 1. a client certificate that the TLS layer verified against the cluster's
 *    client CA (node:https `requestCert` with `ca` = that CA): the user is the
 *    subject's CN, the groups its O values;
 * 2. otherwise a bearer token, checked by the API server through a
 *    TokenReview (results cached briefly: a kubectl session makes many
 *    requests);
 * 3. otherwise the caller is refused (no anonymous access).
 *
 * The cluster's client CA is the `client-ca-file` of ConfigMap
 * `kube-system/extension-apiserver-authentication`, the one aggregated API
 * servers read (see {@link loadClientCa}).
 */
import { createHash } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { AuthenticationApi, CoreApi } from "../kube/apis.ts";
import { NotFoundError, UnauthenticatedError } from "@aranya/common/errors";
import { setBounded } from "@aranya/common/bounded_map";
import { fromApiError } from "../kube/errors.ts";

/** An authenticated caller. */
export interface UserInfo {
  name: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

/** Decides who sent a request. */
export interface Authenticator {
  /**
   * The caller of a request that arrived on `socket` with `authorization`
   * (the header value, if any). Rejects with UnauthenticatedError when no
   * valid credential was presented; other errors mean the check itself
   * failed (for example the API server is unreachable).
   */
  authenticate(socket: TLSSocket, authorization: string | undefined): Promise<UserInfo>;
}

/** Options for {@link KubeAuthenticator}. */
export interface KubeAuthenticatorOptions {
  /** Checks bearer tokens; absent: tokens are refused. */
  authentication?: AuthenticationApi;
  /** How long a token review result is reused, ms (default 2 min, failures 10 s). */
  cacheMs?: number;
  now?: () => number;
}

interface CachedReview {
  until: number;
  user?: UserInfo;
  error?: string;
}

function asList(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** Client certificates from the TLS layer, then TokenReview. */
export class KubeAuthenticator implements Authenticator {
  readonly #o: KubeAuthenticatorOptions;
  readonly #cache = new Map<string, CachedReview>();
  readonly #reviewing = new Map<string, Promise<UserInfo>>();

  constructor(opts: KubeAuthenticatorOptions) {
    this.#o = opts;
  }

  async authenticate(socket: TLSSocket, authorization: string | undefined): Promise<UserInfo> {
    const peer = socket.getPeerCertificate();
    const presented = peer !== null && typeof peer === "object" && Object.keys(peer).length > 0;
    if (presented && socket.authorized) {
      const name = asList(peer.subject?.CN)[0];
      if (name) return { name, groups: asList(peer.subject?.O) };
    }
    const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? "");
    if (!m) {
      throw new UnauthenticatedError(
        presented
          ? `The client certificate was not accepted (${
            socket.authorizationError ?? "no common name"
          })`
          : "No client certificate signed by the cluster's client CA and no bearer token",
      );
    }
    return await this.#review(m[1]!);
  }

  async #review(token: string): Promise<UserInfo> {
    const now = (this.#o.now ?? Date.now)();
    // Keyed by digest: no caller's token is kept in memory.
    const key = createHash("sha256").update(token).digest("base64");
    const cached = this.#cache.get(key);
    if (cached && cached.until > now) {
      if (cached.user) return cached.user;
      throw new UnauthenticatedError(cached.error!);
    }
    // Concurrent requests with one token share one review.
    const running = this.#reviewing.get(key);
    if (running) return await running;
    const p = this.#reviewOnce(token, key, now).finally(() => this.#reviewing.delete(key));
    this.#reviewing.set(key, p);
    return await p;
  }

  async #reviewOnce(token: string, key: string, now: number): Promise<UserInfo> {
    if (!this.#o.authentication) {
      throw new UnauthenticatedError("Bearer tokens are not accepted by this kubelet API");
    }
    let review;
    try {
      review = await this.#o.authentication.createTokenReview({
        body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token } },
      });
    } catch (err) {
      throw fromApiError("Reviewing a bearer token", err);
    }
    const st = review.status;
    const entry: CachedReview = st?.authenticated && st.user?.username
      ? {
        until: now + (this.#o.cacheMs ?? 120_000),
        user: {
          name: st.user.username,
          uid: st.user.uid,
          groups: st.user.groups ?? [],
          extra: st.user.extra,
        },
      }
      : {
        until: now + 10_000,
        error: `The bearer token was not accepted${st?.error ? ` (${st.error})` : ""}`,
      };
    // Bounded: a flood of random tokens evicts the oldest answers, not all of them.
    setBounded(this.#cache, key, entry, 10_000);
    if (entry.user) return entry.user;
    throw new UnauthenticatedError(entry.error!);
  }
}

/** The cluster's client CA bundle (PEM) from `kube-system/extension-apiserver-authentication`. */
export async function loadClientCa(core: CoreApi): Promise<string> {
  let cm;
  try {
    cm = await core.readNamespacedConfigMap({
      namespace: "kube-system",
      name: "extension-apiserver-authentication",
    });
  } catch (err) {
    throw fromApiError(
      `Reading the cluster's client CA (ConfigMap "kube-system/extension-apiserver-authentication")`,
      err,
    );
  }
  const pem = cm.data?.["client-ca-file"];
  if (!pem) {
    throw new NotFoundError(
      `ConfigMap "kube-system/extension-apiserver-authentication" has no "client-ca-file"; ` +
        `set kubelet.clientCaFile in aranya's config`,
    );
  }
  return pem;
}
