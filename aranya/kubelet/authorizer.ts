/**
 * Whether a caller may do what a kubelet API request asks, decided by the API
 * server through a SubjectAccessReview on `nodes/<subresource>` of the node
 * (as the kubelet's webhook authorizer does). Decisions are cached: allowed
 * for 5 minutes, denied for 30 seconds (the kubelet's defaults).
 */
import type { AuthorizationApi } from "../kube/apis.ts";
import { ForbiddenError } from "@aranya/common/errors";
import { fromApiError } from "../kube/errors.ts";
import type { UserInfo } from "./authenticator.ts";
import type { NodeAttributes } from "./routes.ts";

/** Decides whether a caller may act on a node. */
export interface Authorizer {
  /**
   * Resolves when `user` may perform `attrs` on Node `node`; rejects with
   * ForbiddenError naming the user, verb and resource when not, or with the
   * error of the review itself.
   */
  authorize(user: UserInfo, node: string, attrs: NodeAttributes): Promise<void>;
}

/** Options for {@link SubjectAccessReviewAuthorizer}. */
export interface SubjectAccessReviewAuthorizerOptions {
  authorization: AuthorizationApi;
  allowCacheMs?: number;
  denyCacheMs?: number;
  now?: () => number;
}

/** Authorizes through SubjectAccessReview, with a decision cache. */
export class SubjectAccessReviewAuthorizer implements Authorizer {
  readonly #o: SubjectAccessReviewAuthorizerOptions;
  readonly #cache = new Map<string, { until: number; allowed: boolean; reason: string }>();

  constructor(opts: SubjectAccessReviewAuthorizerOptions) {
    this.#o = opts;
  }

  async authorize(user: UserInfo, node: string, attrs: NodeAttributes): Promise<void> {
    const now = (this.#o.now ?? Date.now)();
    const key = JSON.stringify([
      user.name,
      user.uid,
      user.groups,
      node,
      attrs.verb,
      attrs.subresource,
    ]);
    let decision = this.#cache.get(key);
    if (!decision || decision.until <= now) {
      let review;
      try {
        review = await this.#o.authorization.createSubjectAccessReview({
          body: {
            apiVersion: "authorization.k8s.io/v1",
            kind: "SubjectAccessReview",
            spec: {
              user: user.name,
              uid: user.uid,
              groups: user.groups,
              extra: user.extra,
              resourceAttributes: {
                verb: attrs.verb,
                resource: "nodes",
                subresource: attrs.subresource,
                name: node,
              },
            },
          },
        });
      } catch (err) {
        throw fromApiError("Reviewing access to the kubelet API", err);
      }
      const allowed = review.status?.allowed === true;
      decision = {
        allowed,
        reason: review.status?.reason ?? "",
        until: now + (allowed ? this.#o.allowCacheMs ?? 300_000 : this.#o.denyCacheMs ?? 30_000),
      };
      if (this.#cache.size > 10_000) this.#cache.clear();
      this.#cache.set(key, decision);
    }
    if (!decision.allowed) {
      throw new ForbiddenError(
        `User "${user.name}" may not ${attrs.verb} resource "nodes/${attrs.subresource}" of node "${node}"` +
          (decision.reason ? ` (${decision.reason})` : ""),
      );
    }
  }
}
