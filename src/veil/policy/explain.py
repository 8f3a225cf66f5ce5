"""Explain one request (`veil explain`): the decision, the policy locations behind it and, given a
body, the fate of every field with the policy line that decided it.

    explain_request(policy, request, consent, response, now) → Explanation   (.to_json(), .render())

Fates: kept (a keep covers it, or a container kept for what survives inside), removed (minimization:
no keep covers it), dropped (a drop, or a sensitive category dropped for a purpose not based on
consent), transformed (hash, mask, null, replace, generalize), suppressed (an aggregate guard), and for
`each` routes, filtered (a list item whose subject has no consent or no id).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from veil.location import Location
from veil.policy.cases import Consent, Request, Response, View, decision_locations
from veil.policy.compile import CompiledPolicy
from veil.policy.testing import evaluate
from veil.reasons import REASONS
from veil.redact.paths import format_path

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_WHY = {
    "kept": "kept by",
    "removed": "removed by minimization: no keep covers it in",
    "dropped": "dropped by",
    "transformed": "transformed by",
    "suppressed": "suppressed by",
}


@dataclass
class FieldLine:
    path: str
    fate: str
    location: Location | None
    statement: str  # the policy source line, trimmed ("" when unknown)
    category: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "fate": self.fate,
                "location": str(self.location) if self.location else None,
                "statement": self.statement, "category": self.category}


@dataclass
class Explanation:
    outcome: View
    route: str | None
    purpose: str | None
    locations: list[Location]
    fields: list[FieldLine] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        o = self.outcome
        out: dict[str, Any] = {
            "decision": o.decision, "reason": o.reason, "status": o.status, "route": self.route,
            "purpose": self.purpose,
            "title": REASONS.get(o.reason, ("", "upstream error"))[1] if o.reason != "ok" else None,
            "rules": [str(loc) for loc in self.locations],
        }
        if o.rule is not None:
            out["fields"] = [f.to_json() for f in self.fields]
            out["filtered"] = o.filtered
            out["suppressed"] = o.suppressed
            out["body"] = o.body
        return out

    def render(self) -> str:
        o = self.outcome
        lines: list[str] = []
        if o.decision == "block":
            title = REASONS.get(o.reason, ("", "upstream error"))[1]
            lines.append(f"blocked: {o.reason} ({o.status}) - {title}")
        else:
            lines.append(f"admitted: {o.decision} ({o.status}) route {self.route} for {self.purpose}")
        for loc in self.locations:
            lines.append(f"  because of {loc}  | {source_line(self.sources, loc)}")
        if self.fields:
            width = max(len(f.path) for f in self.fields)
            lines.append("fields:")
            for f in self.fields:
                where = f"{_WHY.get(f.fate, f.fate)} {f.location}" if f.location else f.fate
                stmt = f"  | {f.statement}" if f.statement else ""
                lines.append(f"  {f.path:<{width}}  {f.fate:<11}  {where}{stmt}")
        return "\n".join(lines)


def source_line(sources: dict[str, str], loc: Location) -> str:
    lines = sources.get(loc.file, "").splitlines()
    return lines[loc.line - 1].strip() if 0 < loc.line <= len(lines) else ""


def explain_request(policy: CompiledPolicy, req: Request, consent: Consent, resp: Response, now: datetime
                    ) -> Explanation:
    out = evaluate(policy, req, consent, resp, now, fates=True)
    rule = out.rule or out.selected
    route = rule.route if rule else None
    purpose = rule.purpose.name if rule else None
    exp = Explanation(out, route, purpose, decision_locations(out) if out.decision == "block" else [],
                      sources=policy.sources)
    if out.rule is None:
        return exp
    r = out.rule
    exp.locations = [r.loc]
    each = next((rt.each for rt in policy.routes
                 if rt.template == r.route and rt.rules.get(r.purpose.name) is r), None)
    if each is not None:
        list_tpl = format_path(each[0][:-1]) if len(each[0]) > 1 else "$"
        for index, _subject, verdict in out.items:
            if verdict != "ok":
                exp.fields.append(FieldLine(f"{list_tpl}[{index}]", "filtered", r.loc,
                                            f"each item needs its subject's consent: {verdict}"))
    seen: dict[tuple[str | int, ...], tuple[str, int]] = {}
    for fate in out.fates:
        seen[fate.path] = (fate.fate, fate.rule_id)
        if fate.fate == "kept" and fate.rule_id < 0:
            continue  # a container kept only for what survives inside it: its children say why
        if fate.path and seen.get(fate.path[:-1]) == (fate.fate, fate.rule_id):
            continue  # inside a value that already has this fate
        loc = r.location_of(fate.rule_id) if fate.rule_id >= 0 else r.loc
        cat = r.categories_by_rule[fate.rule_id] if 0 <= fate.rule_id < len(r.categories_by_rule) else None
        stmt = source_line(policy.sources, loc)
        exp.fields.append(FieldLine(_concrete(fate.path), fate.fate, loc, stmt, cat))
    return exp


def _concrete(path: tuple[str | int, ...]) -> str:
    if not path:
        return "$"
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            name = seg if _IDENT.fullmatch(seg) else json.dumps(seg, ensure_ascii=False)
            out += ("." if out else "") + name
    return out


__all__ = ["Explanation", "FieldLine", "explain_request", "source_line"]
