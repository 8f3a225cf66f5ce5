from __future__ import annotations

import copy
from typing import Any

import pytest

from veil.errors import PathError
from veil.redact import (
    Action,
    DocumentTooDeep,
    FieldPlan,
    FieldRule,
    Guard,
    Report,
    RuleError,
    compile_plan,
    parse_path,
)
from veil.redact import transforms as tr
from veil.redact.paths import Key
from veil.redact.transforms import Transform

KEY = bytes(range(32))


def keep(path: str, rid: int = -1) -> FieldRule:
    return FieldRule(parse_path(path), Action.KEEP, rule_id=rid)


def drop(path: str, rid: int = -1) -> FieldRule:
    return FieldRule(parse_path(path), Action.DROP, rule_id=rid)


def tf(path: str, t: Transform, rid: int = -1) -> FieldRule:
    return FieldRule(parse_path(path), Action.TRANSFORM, t, rule_id=rid)


def run(rules: list[FieldRule], doc: Any, guards: tuple[Guard, ...] = ()) -> tuple[Any, Report]:
    plan = compile_plan(rules, guards)
    before = copy.deepcopy(doc)
    plan.explain(doc)
    assert doc == before, "explain must not mutate"
    return plan.apply(doc)


def fates(plan: FieldPlan, doc: Any) -> dict[str, tuple[str, int]]:
    return {f.template if f.path else "$": (f.fate, f.rule_id) for f in plan.explain(doc)}


def test_minimize_by_default() -> None:
    out, rep = run([keep("id", 1), keep("name", 2)], {"id": 1, "name": "a", "email": "x", "ssn": {"n": 1}})
    assert out == {"id": 1, "name": "a"}
    assert rep.removed == {"email": 1, "ssn": 1}
    assert rep.dropped == rep.transformed == rep.type_errors == {}


def test_no_rules_removes_everything() -> None:
    assert run([], {"a": 1})[0] is None
    assert run([], [1])[0] is None


def test_keep_covers_subtree_and_ancestors_hold_only_kept() -> None:
    doc = {"a": {"b": {"c": 1, "d": [1, 2]}, "x": 2}, "y": 3}
    out, rep = run([keep("a.b")], doc)
    assert out == {"a": {"b": {"c": 1, "d": [1, 2]}}}
    assert rep.removed == {"a.x": 1, "y": 1}


def test_missing_paths_and_empty_containers() -> None:
    out, _ = run([keep("a.b"), keep("nope.deeper"), keep("items[*].id")], {"a": {}, "items": [{}, {"x": 1}]})
    assert out == {"a": {}, "items": [{}, {}]}


def test_container_of_the_wrong_kind_is_removed() -> None:
    out, rep = run([keep("a.b"), keep("l[*].id")], {"a": [{"b": 1}], "l": {"id": 1}})
    assert out == {}
    assert rep.removed == {"a": 1, "l": 1}
    out, _ = run([keep("a.b")], {"a": "scalar"})
    assert out == {}


def test_each_keeps_objects_with_only_kept_fields() -> None:
    doc = {"items": [{"id": 1, "email": "a"}, 7, "s", None, [1], {"email": "b"}]}
    out, rep = run([keep("items[*].id")], doc)
    assert out == {"items": [{"id": 1}, {}]}
    assert rep.removed == {"items[*].email": 2, "items[*]": 4}


def test_top_level_array_and_nested_arrays() -> None:
    out, _ = run([keep("[*].id")], [{"id": 1, "x": 2}, {"id": 2}])
    assert out == [{"id": 1}, {"id": 2}]
    out, _ = run([keep("matrix[*][*]")], {"matrix": [[1, 2], 3, [4]]})
    assert out == {"matrix": [[1, 2], [4]]}
    out, _ = run([keep("[*]")], [1, {"a": 1}])
    assert out == [1, {"a": 1}]


def test_any_key_matches_object_keys_only() -> None:
    doc = {"home": {"phone": 1, "fax": 2}, "work": {"phone": 3}, "list": [{"phone": 4}], "s": 5}
    out, rep = run([keep("*.phone")], doc)
    assert out == {"home": {"phone": 1}, "work": {"phone": 3}}
    assert rep.removed == {"home.fax": 1, "list": 1, "s": 1}


def test_a_kept_field_is_scrubbed_of_dropped_categories_at_any_depth() -> None:
    doc = {"a": {"card": 1, "x": [{"card": 2, "k": 3}, "s"], "n": 4}, "b": 5}
    out, rep = run([keep("a"), drop("**.card", 7)], doc)
    assert out == {"a": {"x": [{"k": 3}, "s"], "n": 4}}
    assert rep.dropped == {("a.card", 7): 1, ("a.x[*].card", 7): 1}
    # a drop of every element (or key) below is not a plain scrub: nothing of it may survive
    doc = {"a": {"card": 1, "x": [{"k": 3}, "s"], "n": 4}}
    out, _ = run([keep("a"), drop("**.card", 7), drop("**[*]", 8)], doc)
    assert out == {"a": {"x": [], "n": 4}}
    out, rep = run([keep("a"), drop("**.card", 7), drop("**.*", 8)], {"a": {"card": 1, "n": 4}})
    assert out == {} and rep.dropped == {("a", 8): 1}


def test_deep_matches_any_depth_through_objects_and_arrays() -> None:
    doc = {"ssn": 1, "a": {"ssn": 2, "b": [{"ssn": 3, "k": 1}]}, "keep": 4}
    out, rep = run([keep("**"), drop("**.ssn", 9)], doc)
    assert out == {"a": {"b": [{"k": 1}]}, "keep": 4}
    assert rep.dropped == {("ssn", 9): 1, ("a.ssn", 9): 1, ("a.b[*].ssn", 9): 1}
    out, _ = run([keep("**.id")], {"id": 1, "x": {"id": 2, "y": 3, "z": [{"id": 4}, 5]}})
    assert out == {"id": 1, "x": {"id": 2, "z": [{"id": 4}]}}


def test_deep_cycles_through_named_keys() -> None:
    doc = {"a": {"a": {"a": {"a": 1, "b": 2}, "b": 3}}, "b": 4}
    out, _ = run([keep("**.a.b")], copy.deepcopy(doc))
    assert out == {"a": {"a": {"a": {"b": 2}, "b": 3}}}
    plan = compile_plan([keep("**.a.b")])
    for _ in range(3):  # lazily built closures are reused
        assert plan.apply(copy.deepcopy(doc))[0] == out


def test_drop_beats_keep() -> None:
    out, rep = run([keep("a", 1), drop("a.secret", 2)], {"a": {"secret": 1, "ok": 2}})
    assert out == {"a": {"ok": 2}}
    assert rep.dropped == {("a.secret", 2): 1}
    out, rep = run([keep("a.b", 1), drop("a", 2)], {"a": {"b": 1}})
    assert out == {}
    assert rep.dropped == {("a", 2): 1}
    out, rep = run([keep("x"), drop("a")], {"a": 1})  # a drop also explains a field minimization removes
    assert rep.dropped == {("a", -1): 1} and rep.removed == {}


def test_drop_beats_transform() -> None:
    out, rep = run([tf("email", tr.hash(KEY), 1), drop("email", 2)], {"email": "a@b"})
    assert out == {}
    assert rep.dropped == {("email", 2): 1} and rep.transformed == {}


def test_lowest_rule_id_drop_is_reported() -> None:
    _, rep = run([keep("a"), drop("*", 7), drop("a", 3)], {"a": 1})
    assert rep.dropped == {("a", 3): 1}


def test_transform_keeps_its_field_and_beats_keep() -> None:
    out, rep = run([keep("zip", 1), tf("zip", tr.prefix(3), 2)], {"zip": "94107", "x": 1})
    assert out == {"zip": "941"}
    assert rep.transformed == {("zip", 2): 1}


def test_transform_under_keep() -> None:
    out, _ = run([keep("address"), tf("address.zip", tr.prefix(3))], {"address": {"zip": "94107", "c": "SF"}})
    assert out == {"address": {"zip": "941", "c": "SF"}}


def test_transform_sees_whole_value() -> None:
    doc = {"contact": {"email": "a@b", "phone": "1"}}
    out, _ = run([tf("contact", tr.hash(KEY)), keep("contact.email")], copy.deepcopy(doc))
    assert out == {"contact": tr.hash(KEY)(doc["contact"])}
    out, _ = run([tf("contact", tr.null())], copy.deepcopy(doc))
    assert out == {"contact": None}
    out, _ = run([tf("contact", tr.replace("[redacted]"))], copy.deepcopy(doc))
    assert out == {"contact": "[redacted]"}


def test_type_error_fails_closed_to_null() -> None:
    out, rep = run([tf("zip", tr.prefix(3), 4), tf("age", tr.bucket(10), 5)], {"zip": 94107, "age": "x"})
    assert out == {"zip": None, "age": None}
    assert rep.type_errors == {("zip", 4): 1, ("age", 5): 1}
    assert rep.transformed == {}
    out, rep = run([tf("contact", tr.mask())], {"contact": {"email": "a@b"}})
    assert out == {"contact": None}


def test_lowest_rule_id_transform_wins() -> None:
    rules = [tf("email", tr.mask(0, 0), 9), tf("*", tr.null(), 3), tf("email", tr.replace("r"), 5)]
    out, rep = run(rules, {"email": "a@b.c"})
    assert out == {"email": None}
    assert rep.transformed == {("email", 3): 1}


def test_transform_on_each_element() -> None:
    out, rep = run([tf("emails[*]", tr.mask(1, 0))], {"emails": ["ab", "cde", 5, None]})
    assert out == {"emails": ["a*", "c**", "*", None]}  # "5": first >= len, so fully masked
    assert rep.transformed == {("emails[*]", -1): 3}
    assert rep.type_errors == {("emails[*]", -1): 1}


def test_scalar_root() -> None:
    assert run([keep("a")], 5)[0] is None
    assert run([keep("a")], "text")[1].removed == {"": 1}
    assert run([keep("**")], 5)[0] == 5
    assert run([tf("**", tr.null())], {"a": 1})[0] is None
    assert run([keep("**"), drop("**")], {"a": 1})[0] is None
    assert run([keep("[*]")], {"a": 1})[0] is None


def test_quoted_keys() -> None:
    doc = {"first name": 1, "a.b": {"c": 2, "d": 3}, "a": 4}
    out, rep = run([keep('"first name"'), keep('"a.b".c')], doc)
    assert out == {"first name": 1, "a.b": {"c": 2}}
    assert rep.removed == {'"a.b".d': 1, "a": 1}


def test_report_templates_for_wildcards_and_indices() -> None:
    doc = {"u1": {"email": "x", "n": 1}, "u2": {"email": "y"}, "l": [{"email": "z"}]}
    _, rep = run([tf("*.email", tr.null(), 1), keep("l[*].email")], doc)
    assert rep.transformed == {("u1.email", 1): 1, ("u2.email", 1): 1}
    assert rep.removed == {"u1.n": 1}


def test_general_object_mode_counts_and_keeps_order() -> None:
    doc = {"z": {"phone": 1, "x": 2}, "a": {"phone": 3}, "m": 5, "id": 9}
    out, rep = run([keep("*.phone"), keep("id"), drop("a.phone", 4)], doc)
    assert out == {"z": {"phone": 1}, "a": {}, "id": 9}
    assert list(out) == ["z", "a", "id"]
    assert rep.removed == {"z.x": 1, "m": 1}
    assert rep.dropped == {("a.phone", 4): 1}


def test_key_order_follows_the_policy_when_filtering_and_the_document_otherwise() -> None:
    doc = {"c": 1, "b": 2, "a": 3, "x": 4}
    out, _ = run([keep("b"), keep("a"), keep("c")], copy.deepcopy(doc))
    assert list(out) == ["b", "a", "c"]
    out, _ = run([keep("*"), drop("x")], copy.deepcopy(doc))
    assert list(out) == ["c", "b", "a"]


def test_guards_suppress_small_groups_first() -> None:
    doc = {"groups": [
        {"name": "a", "count": 10}, {"name": "b", "count": 4}, {"name": "c"}, {"name": "d", "count": "99"},
        {"name": "e", "count": True}, {"name": "f", "count": 5.0}, 7,
    ]}
    plan = compile_plan([keep("groups[*].name")], [Guard(parse_path("groups"), parse_path("count"), 5, 11)])
    f = fates(plan, doc)
    assert f["groups[*]"] == ("suppressed", 11)  # the last element wins in this summary; all are listed
    suppressed = [x.path for x in plan.explain(doc) if x.fate == "suppressed" and len(x.path) == 2]
    assert suppressed == [("groups", 1), ("groups", 2), ("groups", 3), ("groups", 4), ("groups", 6)]
    out, rep = plan.apply(doc)
    assert out == {"groups": [{"name": "a"}, {"name": "f"}]}
    assert rep.suppressed == 5
    assert rep.removed == {"groups[*].count": 2}  # guards read counts before minimization removes them


def test_guard_nested_count_field_and_minimization_counts() -> None:
    doc = {"rows": [{"stats": {"n": 50}, "v": 1}, {"stats": {"n": 1}, "v": 2}, {"stats": 3, "v": 3}]}
    guard = Guard(parse_path("rows"), parse_path("stats.n"), 10, 2)
    out, rep = run([keep("rows[*].v")], doc, (guard,))
    assert out == {"rows": [{"v": 1}]}
    assert rep.suppressed == 2
    assert rep.removed == {"rows[*].stats": 1}


def test_guard_list_path_with_wildcards_and_non_arrays() -> None:
    doc = {"a": {"g": [{"c": 1}, {"c": 9}]}, "b": {"g": {"c": 0}}}
    guard = Guard(parse_path("*.g"), parse_path("c"), 5)
    out, rep = run([keep("**")], doc, (guard,))
    assert out == {"a": {"g": [{"c": 9}]}, "b": {"g": {"c": 0}}}
    assert rep.suppressed == 1


def test_explain_fates() -> None:
    plan = compile_plan([keep("a", 1), drop("a.s", 2), tf("e", tr.hash(KEY), 3), keep("l[*].id", 4)])
    doc = {"a": {"s": {"deep": 1}, "k": 1}, "e": {"x": 1}, "l": [{"id": 1, "z": 2}, 3], "r": {"q": 1}}
    assert plan.explain(doc)[0].path == ()
    assert fates(plan, doc) == {
        "$": ("kept", -1),
        "a": ("kept", 1),
        "a.s": ("dropped", 2),
        "a.s.deep": ("dropped", 2),
        "a.k": ("kept", 1),
        "e": ("transformed", 3),
        "e.x": ("transformed", 3),
        "l": ("kept", -1),
        "l[*]": ("removed", -1),  # the last element (3) is removed; ("l", 0) is kept
        "l[*].id": ("kept", 4),
        "l[*].z": ("removed", -1),
        "r": ("removed", -1),
        "r.q": ("removed", -1),
    }
    by_path = {x.path: x.fate for x in plan.explain(doc)}
    assert by_path[("l", 0)] == "kept" and by_path[("l", 1)] == "removed"


def test_compile_errors() -> None:
    with pytest.raises(RuleError):
        compile_plan([FieldRule(parse_path("a"), Action.TRANSFORM)])
    with pytest.raises(RuleError):
        compile_plan([FieldRule(parse_path("a"), Action.KEEP, tr.null())])
    with pytest.raises(RuleError):
        compile_plan([FieldRule((), Action.KEEP)])
    with pytest.raises(PathError):
        compile_plan([], [Guard(parse_path("g"), parse_path("*.n"), 5)])

    class Sneaky(str):
        def __repr__(self) -> str:
            return "__import__('os')"

    with pytest.raises(RuleError):
        compile_plan([FieldRule((Key(Sneaky("a")),), Action.KEEP)])


def test_keys_that_need_quoting_work_in_generated_code() -> None:
    odd = ["it's", 'say "hi"', "back\\slash", "new\nline", "\u00e9", "{}", "'''", "\ud800"]
    doc = {k: i for i, k in enumerate(odd)} | {"x": 1, "n": {odd[0]: 1, "y": 2}}
    rules = [FieldRule((Key(k),), Action.KEEP) for k in odd]
    rules.append(FieldRule((Key("n"), Key(odd[0])), Action.KEEP))
    out, rep = run(rules, doc)
    assert out == {k: i for i, k in enumerate(odd)} | {"n": {odd[0]: 1}}
    assert rep.removed == {"x": 1, "n.y": 1}


def test_plan_exposes_rules() -> None:
    rules = [keep("a", 1), drop("b", 2)]
    assert compile_plan(rules).rules == tuple(rules)


def test_deep_documents_fail_closed() -> None:
    doc: Any = {"ssn": 1}
    for _ in range(20000):
        doc = [doc]
    plan = compile_plan([keep("**"), drop("**.ssn")])
    with pytest.raises(DocumentTooDeep) as info:
        plan.apply(doc)
    assert info.value.code == "document_too_deep"
    with pytest.raises(DocumentTooDeep):
        plan.explain(doc)


def test_apply_many_documents_with_one_plan() -> None:
    plan = compile_plan([keep("id"), tf("email", tr.hash(KEY), 2)])
    seen = set()
    for i in range(50):
        out, rep = plan.apply({"id": i, "email": f"u{i}@x", "junk": i})
        seen.add(out["email"])
        assert rep.removed == {"junk": 1} and rep.transformed == {("email", 2): 1}
    assert len(seen) == 50


def test_module_imports_no_io_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, veil.redact; bad = [m for m in ('starlette', 'httpx', 'aiohttp', 'asyncpg', 'sqlite3') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""
