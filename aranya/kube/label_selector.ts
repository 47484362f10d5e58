/**
 * A metav1.LabelSelector evaluated against a label set, as the API machinery
 * does: every `matchLabels` pair and every `matchExpressions` requirement must
 * hold (In, NotIn, Exists, DoesNotExist); an empty selector matches every
 * label set. Pure.
 *
 * @module
 */

/** One requirement of `matchExpressions`. */
export interface LabelSelectorRequirement {
  key: string;
  operator: string;
  values?: string[];
}

/** A metav1.LabelSelector. */
export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

/**
 * True when `labels` satisfy `selector`. An unknown operator, or In/NotIn
 * without values, matches nothing (the API server refuses such selectors;
 * a selector that slipped through must never widen what is allowed).
 */
export function matchesLabelSelector(
  selector: LabelSelector,
  labels: Record<string, string> | undefined,
): boolean {
  const have = labels ?? {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) {
    if (have[k] !== v) return false;
  }
  for (const r of selector.matchExpressions ?? []) {
    const present = Object.hasOwn(have, r.key);
    const values = r.values ?? [];
    switch (r.operator) {
      case "In":
        if (!values.length || !present || !values.includes(have[r.key]!)) return false;
        break;
      case "NotIn":
        if (!values.length || (present && values.includes(have[r.key]!))) return false;
        break;
      case "Exists":
        if (!present) return false;
        break;
      case "DoesNotExist":
        if (present) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/** The selector as `kubectl get -l` writes it (for messages), "<everything>" when empty. */
export function formatLabelSelector(selector: LabelSelector): string {
  const parts = Object.entries(selector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const r of selector.matchExpressions ?? []) {
    const values = (r.values ?? []).join(",");
    if (r.operator === "In") parts.push(`${r.key} in (${values})`);
    else if (r.operator === "NotIn") parts.push(`${r.key} notin (${values})`);
    else if (r.operator === "Exists") parts.push(r.key);
    else if (r.operator === "DoesNotExist") parts.push(`!${r.key}`);
    else parts.push(`${r.key} ${r.operator} (${values})`);
  }
  return parts.length ? parts.join(",") : "<everything>";
}
