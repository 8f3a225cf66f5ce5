"""What a decision leaves behind: the decision-log record and the field-level metrics.

A field report (from the plan) is summarized once per shape — responses of one upstream mostly share
it — so the request path does dict lookups only. Field paths that an upstream built from data (map
keys) are logged as `<unnamed>`: the log holds paths and pseudonyms, never values.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from veil import metrics
from veil.audit.report import pseudonym, pseudonym_list
from veil.keys import KeyRing
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.policy.flow import Outcome
from veil.reasons import Reason
from veil.redact.categories import as_record

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


_second: tuple[int, str] = (-1, "")  # (a second since the epoch, its datetime.isoformat() up to the seconds)


def now_iso() -> str:
    """`datetime.now(UTC).isoformat()` (microseconds, `+00:00`; no fraction when it is 0): the date
    and time of day are formatted once per second, the microseconds per call (a record's time)."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)  # the clock datetime.now reads, floored as it is
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, datetime.fromtimestamp(sec, UTC).isoformat()[:19])  # swapped whole
    return f"{cached[1]}.{us:06d}+00:00" if us else f"{cached[1]}+00:00"


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
            changed=report.changed,
        )
        if len(self._summaries) >= 4096:
            self._summaries.clear()
        self._summaries[key] = summary
        return summary

    def record(self, policy: CompiledPolicy, out: Outcome, decision_id: str, summary: Summary | None = None
               ) -> dict[str, Any]:
        """The decision record of an outcome (what the decision log keeps and the access report reads).

        `disclosed` lists, by category, the forms in which data left veil with this response ("clear",
        "hash", "mask", "generalize"): read from the document that left, never from what the rule
        mentions. It is {} when nothing left (a block, a HEAD request, an empty body) and null when veil
        cannot tell (report-only passing on a body that is not JSON). On a list response whose items
        disclose different categories, `disclosed_by_subject` gives each entry of `subjects` its own."""
        ring = self.ring
        ad, blocked = out.admitted, out.blocked
        rec: dict[str, Any] = {
            "id": decision_id, "time": now_iso(),
            "caller": ad.caller.name if ad is not None else (blocked.caller if blocked else None),
            "purpose": ad.purpose.name if ad is not None else (blocked.purpose if blocked else None),
            "route": ad.route.template if ad is not None else (blocked.route if blocked else None),
            "subject": pseudonym(ring, out.subject) if out.subject else None,
            "decision": out.decision, "reason": out.reason.value, "consent": out.consent,
            "policy": policy.version,
        }
        if ad is not None:
            rec["basis"] = ad.purpose.basis
        if summary is not None and (out.reason is Reason.OK or blocked is None):
            rec["fields"] = summary.fields
            rec["rules"] = summary.locations
        else:
            rec["rules"] = [str(loc) for loc in blocked.locations] if blocked is not None else []
        rec["released"] = out.released
        disclosed = out.disclosed
        rec["disclosed"] = as_record(disclosed) if disclosed is not None else None
        if out.subjects:
            rec["subjects"] = pseudonym_list(ring, out.subjects)
            per = out.disclosed_by_subject
            if per is not None:
                sets: list[dict[str, list[str]]] = []
                index: dict[str, int] = {}
                of: list[int] = []
                for sid in out.subjects:
                    i = index.get(sid)
                    if i is None:
                        i = index[sid] = len(sets)
                        sets.append(as_record(per.get(sid, {})))
                    of.append(i)
                rec["disclosed_by_subject"] = {"sets": sets, "of": of}
        if out.filtered:
            rec["filtered"] = out.filtered
        if out.report_only:
            rec["mode"] = "report-only"
        return rec


def count(route: str, purpose: str, decision: str, reason: str, summary: Summary, filtered: int) -> None:
    tally = metrics.tally
    tally.inc(metrics.requests(route, purpose, decision, reason))
    tally.inc_all(summary.increments)
    if filtered:
        tally.inc(metrics.fields("record", "filtered"), filtered)
