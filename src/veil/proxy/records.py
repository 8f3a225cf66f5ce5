"""What a decision leaves behind: the decision-log record and the field-level metrics.

A field report (from the plan) is summarized once per shape — responses of one upstream mostly share
it — so the request path does dict lookups only. Field paths that an upstream built from data (map
keys) are logged as `<unnamed>`: the log holds paths and pseudonyms, never values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from veil import metrics
from veil.audit.report import pseudonym, pseudonym_list
from veil.keys import KeyRing
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.policy.decision import Admitted

_SAFE_TEMPLATE = re.compile(r"[A-Za-z0-9_\-\[\]*.]{1,200}")
MAX_LOGGED_PATHS = 100


def safe_templates(templates: Any) -> list[str]:
    """Field paths for the log. A key that an upstream built from data (an e-mail used as a map key)
    is not a field name: such paths are logged as `<unnamed>`, never as the key itself."""
    out = sorted({t if _SAFE_TEMPLATE.fullmatch(t) else "<unnamed>" for t in templates})
    return out[:MAX_LOGGED_PATHS]


@dataclass(frozen=True, slots=True)
class Summary:
    fields: dict[str, list[str]]
    categories: list[str]
    locations: list[str]
    increments: tuple[tuple[Any, int], ...]  # (metric child, amount)
    changed: bool


EMPTY_SUMMARY = Summary({"removed": [], "dropped": [], "transformed": []}, [], [], (), False)


def fields_of(report: Any) -> dict[str, list[str]]:
    if report is None:
        return {"removed": [], "dropped": [], "transformed": []}
    return {
        "removed": safe_templates(report.removed),
        "dropped": safe_templates(t for t, _ in report.dropped),
        "transformed": safe_templates(t for t, _ in report.transformed),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Recorder:
    """Summaries cache (per policy) and record building."""

    def __init__(self, pseudonym_ring: KeyRing) -> None:
        self.ring = pseudonym_ring
        self._summaries: dict[tuple[Any, ...], Summary] = {}
        self._summaries_for: CompiledPolicy | None = None

    def summary(self, policy: CompiledPolicy, rule: CompiledRule, report: Any) -> Summary:
        """What a field report means for the log and the metrics; computed once per report shape
        (responses of one upstream mostly share it), so the request path does dict lookups only."""
        if report is None:
            return Summary(EMPTY_SUMMARY.fields, [], [str(rule.loc)], (), False)
        if self._summaries_for is not policy:  # a reload: start afresh (and keep ids from being reused)
            self._summaries.clear()
            self._summaries_for = policy
        # A shared report lives as long as its plan (and so its policy): its identity is its key.
        key: tuple[Any, ...] = (id(report),) if report.shared else (
            id(rule), tuple(report.removed.items()), tuple(report.dropped.items()),
            tuple(report.transformed.items()), report.suppressed)
        hit = self._summaries.get(key)
        if hit is not None:
            return hit
        fields = fields_of(report)
        ids = {rid for (_, rid) in report.dropped} | {rid for (_, rid) in report.transformed}
        locations = [str(rule.loc), *sorted({str(rule.location_of(i)) for i in ids if i >= 0})]
        counts: dict[tuple[str, str], int] = {}
        for action, items in (("removed", report.removed.items()),
                              ("dropped", ((t, n) for (t, _), n in report.dropped.items())),
                              ("transformed", ((t, n) for (t, _), n in report.transformed.items()))):
            for tpl, n in items:
                k = (policy.category_of(tpl), action)
                counts[k] = counts.get(k, 0) + n
        if report.suppressed:
            counts[("aggregate", "suppressed")] = report.suppressed
        summary = Summary(
            fields=fields,
            categories=sorted({c for c, _ in counts if c != "aggregate"}),
            locations=locations,
            increments=tuple((metrics.fields(c, a), n) for (c, a), n in counts.items()),
            changed=bool(counts) or bool(report.type_errors),
        )
        if len(self._summaries) >= 4096:
            self._summaries.clear()
        self._summaries[key] = summary
        return summary

    def decision(self, policy: CompiledPolicy, ad: Admitted, decision: str, reason: str, decision_id: str,
                 subject: str | None, subjects: list[str], summary: Summary, facts: dict[str, str],
                 filtered: int = 0) -> dict[str, Any]:
        ring = self.ring
        rec: dict[str, Any] = {
            "id": decision_id, "time": now_iso(), "caller": ad.caller.name,
            "purpose": ad.purpose.name, "basis": ad.purpose.basis, "route": ad.route.template,
            "subject": pseudonym(ring, subject) if subject else None,
            "decision": decision, "reason": reason, "fields": summary.fields, "categories": summary.categories,
            "disclosed_categories": policy.disclosed_categories(ad.rule), "consent": facts,
            "policy": policy.version, "rules": summary.locations,
        }
        if subjects:
            rec["subjects"] = pseudonym_list(ring, subjects)
        if filtered:
            rec["filtered"] = filtered
        return rec

    def block(self, policy: CompiledPolicy, decision_id: str, reason: str, route: str | None, purpose: str | None,
              caller: str | None, subject: str | None, consent: dict[str, str] | None, rules: list[str]
              ) -> dict[str, Any]:
        return {
            "id": decision_id, "time": now_iso(), "caller": caller, "purpose": purpose, "route": route,
            "subject": pseudonym(self.ring, subject) if subject else None, "decision": "block",
            "reason": reason, "consent": consent or {}, "policy": policy.version, "rules": rules,
        }


def count(route: str, purpose: str, decision: str, reason: str, summary: Summary, filtered: int) -> None:
    tally = metrics.tally
    tally.inc(metrics.requests(route, purpose, decision, reason))
    tally.inc_all(summary.increments)
    if filtered:
        tally.inc(metrics.fields("record", "filtered"), filtered)
