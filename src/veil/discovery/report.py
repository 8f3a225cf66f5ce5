"""`veil discover report`: what report-only traffic showed, per route and purpose, with the policy's
fate for each path (from the compiled field plan, as `veil coverage` has it: veil.schema.coverage.judge).

A path looks personal when a detector matched at least `min_rate` of the values it examined there
(the detector's category: email → contact.email, ...), or, failing that, by its name (veil.personal).
Paths that look personal and leave in clear are listed first; their rows are the findings
`veil discover suggest` writes policy lines for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from veil.discovery.state import PathStats, State
from veil.errors import PathError
from veil.location import Location
from veil.personal import Finding, classify_detector, classify_name
from veil.policy.compile import CompiledPolicy, CompiledRoute
from veil.redact.paths import AnyKey, Each, Key, parse_path
from veil.schema.coverage import judge
from veil.schema.reach import OTHER_KEY


@dataclass
class PathRow:
    path: str
    steps: tuple[str | int, ...]
    stats: PathStats
    responses: int
    detector: str | None  # the detector with the highest hit rate, when at least min_rate
    rate: float  # its hit rate
    personal: Finding | None
    fate: str | None  # None: no rule for this route and purpose (every response is blocked)
    how: str | None = None
    location: Location | None = None
    statement: str = ""
    category: str | None = None

    @property
    def in_clear(self) -> bool:
        return self.fate == "kept"

    @property
    def finding(self) -> bool:
        return self.personal is not None and self.in_clear

    def to_json(self) -> dict[str, Any]:
        st = self.stats
        return {
            "path": self.path, "seen": st.seen,
            "frequency": round(st.seen / self.responses, 4) if self.responses else 0,
            "types": st.types, "checked": st.checked,
            "hit_rates": {k: round(n / st.checked, 4) for k, n in sorted(st.hits.items())} if st.checked else {},
            "personal": None if self.personal is None else {
                "category": self.personal.category, "sensitive": self.personal.sensitive,
                "reason": self.personal.reason},
            "fate": self.fate, "how": self.how, "location": str(self.location) if self.location else None,
            "statement": self.statement, "category": self.category, "finding": self.finding,
        }


@dataclass
class RuleReport:
    route: str  # "GET /customers/{id}"
    purpose: str
    responses: int
    overflow: int
    rule: bool  # the policy has a rule for this route and purpose
    rows: list[PathRow] = field(default_factory=list)

    @property
    def findings(self) -> list[PathRow]:
        return [r for r in self.rows if r.finding]

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "purpose": self.purpose, "responses": self.responses,
                "overflow": self.overflow, "rule": self.rule, "findings": [r.path for r in self.findings],
                "paths": [r.to_json() for r in self.rows]}


def steps_of(template: str) -> tuple[str | int, ...] | None:
    if template == "$":
        return ()
    try:
        path = parse_path(template)
    except PathError:
        return None
    out: list[str | int] = []
    for seg in path:
        if isinstance(seg, Key):
            out.append(seg.name)
        elif isinstance(seg, Each):
            out.append(0)
        elif isinstance(seg, AnyKey):
            out.append(OTHER_KEY)
        else:
            return None
    return tuple(out)


def _route(policy: CompiledPolicy, key: str) -> CompiledRoute | None:
    method, _, template = key.partition(" ")
    return next((r for r in policy.routes if r.method == method and r.template == template), None)


def build_report(policy: CompiledPolicy, state: State, *, min_rate: float = 0.5) -> list[RuleReport]:
    out: list[RuleReport] = []
    for (route_key, purpose), shapes in sorted(state.rules.items()):
        route = _route(policy, route_key)
        rule = route.rules.get(purpose) if route is not None else None
        rep = RuleReport(route_key, purpose, shapes.responses, shapes.overflow, rule is not None)
        context = [s for s in route_key.partition(" ")[2].strip("/").split("/") if s and not s.startswith("{")]
        places: list[tuple[tuple[str | int, ...], frozenset[str]]] = []
        rows: list[PathRow] = []
        for tpl, st in shapes.paths.items():
            steps = steps_of(tpl)
            if steps is None or not steps:
                continue
            detector, rate = None, 0.0
            if st.checked:
                name, hits = max(sorted(st.hits.items()), key=lambda kv: kv[1], default=(None, 0))
                if name is not None and hits / st.checked >= min_rate:
                    detector, rate = name, hits / st.checked
            personal = classify_detector(detector) if detector else None
            if personal is None and not isinstance(steps[-1], int) and set(st.types) - {"boolean", "null"}:
                personal = classify_name([s for s in steps if isinstance(s, str) and s != OTHER_KEY], context)
            rows.append(PathRow(tpl, steps, st, shapes.responses, detector, rate, personal, None))
            places.append((steps, frozenset(st.types)))
        if rule is not None:
            judged = judge(policy, rule, places)
            for row in rows:
                j = judged[row.steps]
                row.fate, row.how, row.location, row.statement = j.fate, j.how, j.location, j.statement
                cat = policy.category_of(row.path)
                row.category = None if cat == "uncategorized" else cat
        else:
            for row in rows:
                cat = policy.category_of(row.path)
                row.category = None if cat == "uncategorized" else cat
        rows.sort(key=lambda r: (not r.finding, r.personal is None, r.path))
        rep.rows = rows
        out.append(rep)
    return out


def markdown(reports: list[RuleReport], state: State) -> str:
    lines = ["# Discovery report", ""]
    total = sum(len(r.findings) for r in reports)
    lines.append(f"{len(reports)} route/purpose pair(s) observed from {', '.join(state.replicas) or 'no replica'}; "
                 f"{total} path(s) look personal and leave in clear.")
    if state.overflow:
        lines.append(f"{state.overflow} response(s) were not recorded: the route/purpose cap was reached.")
    for rep in reports:
        lines += ["", f"## {rep.route} — {rep.purpose}", ""]
        head = f"{rep.responses} response(s) examined"
        if rep.overflow:
            head += f"; {rep.overflow} path occurrence(s) over the cap"
        if not rep.rule:
            head += "; no rule for this purpose: every such request is blocked in enforce mode"
        lines.append(head)
        if rep.findings:
            lines.append("")
            lines.append("**Personal and in clear:** " + ", ".join(f"`{r.path}`" for r in rep.findings))
        lines += ["", "| path | seen | types | detector hits | looks personal | fate | category | policy line |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rep.rows:
            st = r.stats
            freq = f"{st.seen / rep.responses:.0%}" if rep.responses else "-"
            types = ", ".join(f"{k} {n}" for k, n in sorted(st.types.items()))
            hits = ", ".join(f"{k} {n / st.checked:.0%}" for k, n in sorted(st.hits.items())) if st.checked else ""
            personal = f"{r.personal.category} ({r.personal.reason})" if r.personal else ""
            fate = (r.fate or "no rule") + (f" ({r.how})" if r.how else "")
            where = f"{r.location}: `{r.statement}`" if r.location and r.statement else ""
            lines.append(f"| `{_cell(r.path)}` | {freq} | {types} | {hits} | {_cell(personal)} | {fate} | "
                         f"{r.category or ''} | {_cell(where)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_json(reports: list[RuleReport], state: State) -> dict[str, Any]:
    return {"replicas": state.replicas, "overflow": state.overflow, "rules": [r.to_json() for r in reports]}


__all__ = ["PathRow", "RuleReport", "build_report", "markdown", "steps_of", "to_json"]
