"""Every field of a response schema with its fate under a compiled rule (`veil coverage`, `veil check`).

The fate comes from the engine that enforces: each schema location is placed in a small document
synthesized from the schema (an object as `{}`, an array as `[]` with one element, a scalar as null,
a key the schema does not name as a key no rule names) and `FieldPlan.explain` — the engine's own
reading of its rules, which the test suite checks against `FieldPlan.apply` — says what happens to it.
A location that may be an object or a string (`anyOf`) is placed once as each; the row reports the
most disclosing fate. Aggregate guards (`suppress`) remove whole list items by their values; they are
listed per rule and left out of the field fates.

Fates: kept (in clear), transformed (how: hash, mask, ...), partial (an object or array kept for
what survives inside it), dropped, removed (minimization: no keep covers it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from veil.location import Location
from veil.personal import Finding, classify_format, classify_name, finding
from veil.policy.compile import CompiledPolicy, CompiledRule
from veil.redact.engine import FieldPlan
from veil.schema.reach import OTHER_KEY, kinds_at, locations, merged, template_of
from veil.schema.shape import Shape, flatten

_OTHER = "\x00veil: a key no rule names"  # stands for keys a schema lets through without naming them
_UNSET: Any = object()
_ORDER = {"kept": 0, "transformed": 1, "partial": 2, "dropped": 3, "removed": 4}
_CLASSES = {"object": "object", "array": "array"}  # every other JSON type is a scalar


@dataclass(frozen=True)
class Row:
    template: str
    steps: tuple[str | int, ...]
    kinds: tuple[str, ...]
    fate: str  # kept | transformed | partial | dropped | removed
    how: str | None  # for transformed: the transform (hash, mask, prefix, date, ...)
    rule_id: int
    location: Location | None
    statement: str
    category: str | None  # the policy's category for this field (None: uncategorized)
    personal: Finding | None
    note: str | None = None  # fates as other kinds, a recursion cut

    @property
    def personal_in_clear(self) -> bool:
        """A field that looks personal leaves in clear and no category of the policy names it."""
        return self.personal is not None and self.fate == "kept" and self.category is None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.template, "types": list(self.kinds), "fate": self.fate, "how": self.how,
            "location": str(self.location) if self.location else None, "statement": self.statement,
            "category": self.category,
            "personal": None if self.personal is None else {
                "category": self.personal.category, "sensitive": self.personal.sensitive,
                "reason": self.personal.reason},
            "note": self.note,
        }


@dataclass
class RuleCoverage:
    method: str
    route: str
    purpose: str
    source: str  # where the schema came from ("api.yaml: GET /customers/{customerId}")
    rows: list[Row] = field(default_factory=list)
    guards: list[str] = field(default_factory=list)  # statements of aggregate guards
    truncated: bool = False

    @property
    def findings(self) -> list[Row]:
        return [r for r in self.rows if r.personal_in_clear]


def personal_of(shapes: Sequence[Shape], names: Sequence[str], context: Sequence[str] = (),
                by_name: bool = True) -> Finding | None:
    """Why a schema location looks personal: `x-veil-category`, a format, or its name; None when it
    does not (or the schema says `x-veil-personal: false`). Names are not read for booleans
    (`email_verified`) nor, with `by_name` false, for array elements (their array has the name)."""
    flat = [s for sh in shapes for s in flatten(sh)]
    if any(s.personal is False for s in flat):
        return None
    for s in flat:
        if s.category:
            return finding(s.category, "x-veil-category")
    for s in flat:
        hit = classify_format(s.format)
        if hit:
            return hit
    if any(s.personal is True for s in flat):
        return classify_name(names, context) or finding("personal", "x-veil-personal")
    if not by_name or not names or kinds_at(shapes) <= {"boolean", "null"}:
        return None
    return classify_name(names, context)


def fates(plan: FieldPlan, entries: Sequence[tuple[tuple[str | int, ...], str]]
          ) -> dict[tuple[Any, ...], tuple[str, int]]:
    """(steps, kind class) → (fate, rule_id) from `plan.explain` on synthesized documents."""
    plain = FieldPlan(plan.rules)  # the same rules without aggregate guards (they act on values)
    docs: list[list[Any]] = []
    placed: list[list[tuple[tuple[str | int, ...], str]]] = []
    for steps, cls in sorted(entries, key=lambda e: len(e[0])):
        for holder, mine in zip(docs, placed, strict=True):
            if _place(holder, steps, cls):
                mine.append((steps, cls))
                break
        else:
            holder = [_UNSET]
            ok = _place(holder, steps, cls)
            assert ok
            docs.append(holder)
            placed.append([(steps, cls)])
    out: dict[tuple[Any, ...], tuple[str, int]] = {}
    for holder, mine in zip(docs, placed, strict=True):
        by_path = {f.path: (f.fate, f.rule_id) for f in plain.explain(holder[0])}
        for steps, cls in mine:
            fate, rule_id = by_path[_concrete(steps)]
            if fate == "kept" and rule_id < 0:
                fate = "partial"
            out[(steps, cls)] = (fate, rule_id)
    return out


def _concrete(steps: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(_OTHER if s == OTHER_KEY else s for s in steps)


def _place(holder: list[Any], steps: tuple[str | int, ...], cls: str) -> bool:
    """Put a location into a document, creating its ancestors; False when the document already has a
    different kind of value on the way (nothing is changed then)."""
    conc = _concrete(steps)
    node = holder[0]
    for s in conc:  # check first
        if node is _UNSET:
            break
        want = dict if isinstance(s, str) else list
        if type(node) is not want:
            return False
        node = node.get(s, _UNSET) if isinstance(node, dict) else (node[0] if node else _UNSET)
    else:
        if node is not _UNSET:
            return _kind_of(node) == cls
    parent: Any = holder
    key: Any = 0
    for s in conc:
        node = _get(parent, key)
        if node is _UNSET:
            node = {} if isinstance(s, str) else []
            _set(parent, key, node)
        parent, key = node, s
    if _get(parent, key) is _UNSET:
        _set(parent, key, {} if cls == "object" else [] if cls == "array" else None)
    return True


def _get(parent: Any, key: Any) -> Any:
    if isinstance(parent, dict):
        return parent.get(key, _UNSET)
    return parent[0] if parent else _UNSET


def _set(parent: Any, key: Any, value: Any) -> None:
    if isinstance(parent, dict):
        parent[key] = value
    elif parent:
        parent[0] = value
    else:
        parent.append(value)


def _kind_of(node: Any) -> str:
    return "object" if isinstance(node, dict) else "array" if isinstance(node, list) else "scalar"


@dataclass(frozen=True)
class Judged:
    """A location's fate under one rule (the most disclosing over the kinds it may have)."""

    fate: str
    rule_id: int
    how: str | None
    location: Location
    statement: str
    note: str | None


def judge(policy: CompiledPolicy, rule: CompiledRule,
          places: Sequence[tuple[tuple[str | int, ...], frozenset[str]]]) -> dict[tuple[str | int, ...], Judged]:
    """The fate of each location (steps from the root: keys, `*` for a key nobody names, 0 for array
    elements) that may hold the given JSON kinds. Used by `veil coverage` (schema locations) and
    `veil discover` (observed locations) alike."""
    entries = [(steps, cls) for steps, ks in places for cls in sorted({_CLASSES.get(k, "scalar") for k in ks})]
    fate_of = fates(rule.plan, entries)
    out: dict[tuple[str | int, ...], Judged] = {}
    lines: dict[Location, str] = {}
    for steps, ks in places:
        options = sorted(((fate_of[(steps, cls)], cls) for cls in sorted({_CLASSES.get(k, "scalar") for k in ks})),
                         key=lambda x: _ORDER[x[0][0]])
        (fate, rule_id), _cls = options[0]
        notes = [f"{f} as {c}" for (f, _), c in options[1:] if f != fate]
        loc = rule.location_of(rule_id) if rule_id >= 0 else rule.loc
        how = None
        if fate == "transformed":
            tr = next((r.transform for r in rule.plan.rules if r.rule_id == rule_id and r.transform), None)
            how = tr.name if tr is not None else None
        text = lines.get(loc)
        if text is None:
            text = lines[loc] = source_line(policy.sources, loc)
        out[steps] = Judged(fate, rule_id, how, loc, text, "; ".join(notes) or None)
    return out


def cover_rule(policy: CompiledPolicy, method: str, route: str, rule: CompiledRule, roots: Sequence[Shape],
               source: str, context: Sequence[str] = ()) -> RuleCoverage:
    found, truncated = locations(roots)
    places = merged(found)
    recursive = {loc.steps for loc in found if loc.recursive}
    kinds_by = {steps: kinds_at(shapes) for steps, shapes in places}
    judged = judge(policy, rule, [(steps, kinds_by[steps]) for steps, _ in places])
    cov = RuleCoverage(method, route, rule.purpose.name, source, truncated=truncated)
    for steps, shapes in places:
        j = judged[steps]
        note = "; ".join(n for n in (j.note, "the schema recurses here" if steps in recursive else None) if n)
        tpl = template_of(steps)
        names = [s for s in steps if isinstance(s, str) and s != OTHER_KEY]
        category = policy.category_of(tpl) if steps else "uncategorized"
        cov.rows.append(Row(
            tpl, steps, tuple(k for k in ("object", "array", "string", "number", "integer", "boolean", "null")
                              if k in kinds_by[steps]),
            j.fate, j.how, j.rule_id, j.location, j.statement, None if category == "uncategorized" else category,
            personal_of(shapes, names, context, by_name=not isinstance(steps[-1], int)) if steps else None,
            note or None,
        ))
    for g in rule.plan.guards:
        loc = rule.location_of(g.rule_id)
        cov.guards.append(f"{loc}: {source_line(policy.sources, loc)}")
    return cov


def source_line(sources: dict[str, str], loc: Location) -> str:
    lines = sources.get(loc.file, "").splitlines()
    return lines[loc.line - 1].strip() if 0 < loc.line <= len(lines) else ""


__all__ = ["Judged", "Row", "RuleCoverage", "cover_rule", "fates", "judge", "personal_of"]
