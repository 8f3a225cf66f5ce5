"""Checks of the compiled policy: statements the compiled plans make silent no-ops.

    check_plans(policy) → [Diagnostic]

It asks each compiled field plan (FieldPlan.fate_at) what becomes of the path a `keep` or a transform
names, so the answer is the one the proxy will act on, never a second reading of the rules:

- sensitive_without_consent (error): a `keep` of a path under a sensitive category, for a purpose not
  based on consent: the category is dropped whatever the rule says (GDPR Art. 9), so the keep is void;
- keep_overridden (warning): a `keep` of a path that a `drop` of the same rule removes (drop beats keep);
- transform_overridden (warning): a transform whose path is dropped (by a `drop`, or as a sensitive
  category for a purpose not based on consent) and so never applies.
"""

from __future__ import annotations

from veil.errors import Diagnostic, Severity
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.redact.engine import Action
from veil.redact.paths import format_path

_KEEP_SENSITIVE_HINT = ("special categories need explicit consent (GDPR Art. 9): transform the whole category "
                        "(hash @{cat}, generalize @{cat} …) or use a consent-based purpose")


def check_plans(policy: CompiledPolicy) -> list[Diagnostic]:
    out: dict[tuple[str, str, str], Diagnostic] = {}
    for route in policy.routes:
        for rule in route.rules.values():
            for d in _check_rule(rule):
                out.setdefault((d.code, str(d.location), d.message), d)
    return list(out.values())


def _check_rule(rule: CompiledRule) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    purpose = rule.purpose
    for fr in rule.plan.rules:
        if fr.action is Action.DROP or fr.rule_id in rule.implicit:
            continue
        fate = rule.plan.fate_at(fr.path)
        if fate is None or fate[0] != "dropped":
            continue
        by = fate[1]
        what = "keep" if fr.action is Action.KEEP else (fr.transform.name if fr.transform else "transform")
        text = f"{what} {'@' + fr.category if fr.category else format_path(fr.path)}"
        at = rule.location_of(fr.rule_id)
        if by in rule.implicit:
            cat = rule.categories_by_rule[by] or "?"
            if fr.action is Action.KEEP:
                found.append(Diagnostic(
                    "sensitive_without_consent",
                    f"{text} lies in sensitive category @{cat}, which purpose {purpose.name!r} "
                    f"(basis {purpose.basis}) never shows in clear: the keep has no effect", at,
                    _KEEP_SENSITIVE_HINT.format(cat=cat)))
            else:
                found.append(Diagnostic(
                    "transform_overridden",
                    f"{text} has no effect: sensitive category @{cat} is dropped for purpose {purpose.name!r} "
                    f"(basis {purpose.basis})", at, _KEEP_SENSITIVE_HINT.format(cat=cat), Severity.WARNING))
            continue
        drop_at = rule.location_of(by)
        code = "keep_overridden" if fr.action is Action.KEEP else "transform_overridden"
        found.append(Diagnostic(
            code, f"{text} has no effect: the drop at {drop_at} removes it (drop beats keep and transforms)",
            at, "remove one of the two statements", Severity.WARNING))
    return found


__all__ = ["check_plans"]
