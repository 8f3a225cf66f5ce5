"""The fates `veil coverage` and `veil discover` report come from the enforcing engine: for random
rules and random documents, the fate computed on a synthesized document for a location's template
equals the fate `FieldPlan.explain` gives every concrete node of that template (explain is itself
checked against `FieldPlan.apply` in tests/redact/test_properties.py), and a value reported kept
comes out of `apply` unchanged."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given

from tests.redact.test_properties import SETTINGS, documents, nodes, rule_sets
from veil.redact import FieldPlan, FieldRule
from veil.redact import transforms as tr
from veil.schema.coverage import fates

POOL = [tr.hash(bytes(32)), tr.mask(1, 0), tr.null()]


def _cls(v: Any) -> str:
    return "object" if isinstance(v, dict) else "array" if isinstance(v, list) else "scalar"


def _steps(where: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(0 if isinstance(s, int) else s for s in where)


@SETTINGS
@given(rule_sets(POOL), documents)
def test_synthesized_fates_equal_the_engines(rules: list[FieldRule], doc: Any) -> None:
    plan = FieldPlan(rules)
    concrete = {f.path: (f.fate, f.rule_id) for f in plan.explain(doc)}
    entries = sorted({(_steps(w), _cls(v)) for w, v in nodes(doc)}, key=repr)
    got = fates(plan, entries)
    for where, value in nodes(doc):
        fate, rule_id = concrete[where]
        if fate == "kept" and rule_id < 0:
            fate = "partial"
        assert got[(_steps(where), _cls(value))] == (fate, rule_id), where


@SETTINGS
@given(rule_sets(POOL), documents)
def test_a_field_reported_kept_leaves_unchanged(rules: list[FieldRule], doc: Any) -> None:
    plan = FieldPlan(rules)
    out, _ = plan.apply(copy.deepcopy(doc))
    got = fates(plan, sorted({(_steps(w), _cls(v)) for w, v in nodes(doc)}, key=repr))
    for where, value in nodes(doc):
        if got[(_steps(where), _cls(value))][0] != "kept" or _cls(value) != "scalar" \
                or any(isinstance(s, int) for s in where):
            continue  # (a kept container may lose parts; list positions move when elements are removed)
        node = out
        for step in where:
            node = node[step]
        assert node == value
