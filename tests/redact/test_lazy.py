"""Lazy documents: `apply_lazy` on a simdjson reading equals `apply` on an orjson parse, or says it
cannot (NotLazy) so the caller parses with orjson."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.redact.test_properties import ANY, KEYS, SETTINGS, documents, listed, rule_sets, scalars
from veil.redact import Action, FieldRule, Guard, compile_plan, lazy, parse_path
from veil.redact import transforms as tr
from veil.redact.lazy import NotLazy
from veil.redact.paths import Deep, Key


def both(rules: list[FieldRule], body: bytes) -> tuple[Any, Any]:
    plan = compile_plan(rules)
    return plan.apply(orjson.loads(body)), plan.apply_lazy(lazy.parse(body))


@SETTINGS
@given(documents, rule_sets(ANY))
def test_lazy_apply_equals_apply(doc: Any, rules: list[FieldRule]) -> None:
    body = orjson.dumps(doc)
    eager, lazy_ = both(rules, body)
    assert lazy_ == eager  # output and report
    orjson.dumps(lazy_[0])  # plain Python throughout: no proxy leaks into what is sent


def _text(node: Any) -> str:
    """JSON text for a tree whose objects are lists of pairs (so keys may repeat)."""
    if isinstance(node, tuple):
        return "{" + ",".join(orjson.dumps(k).decode() + ":" + _text(v) for k, v in node[0]) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_text(x) for x in node) + "]"
    return orjson.dumps(node).decode()


dup_documents = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.lists(st.tuples(st.sampled_from(KEYS), kids), max_size=5).map(lambda pairs: (pairs,)),
    ),
    max_leaves=12,
)


@SETTINGS
@given(dup_documents, rule_sets(ANY))
def test_duplicate_keys_give_the_orjson_result_or_not_lazy(tree: Any, rules: list[FieldRule]) -> None:
    body = _text(tree).encode()
    plan = compile_plan(rules)
    eager = plan.apply(orjson.loads(body))
    try:
        got = plan.apply_lazy(lazy.parse(body))
    except NotLazy:
        return
    assert got == eager


def test_duplicate_key_in_a_filtered_object_is_not_lazy() -> None:
    rules = [FieldRule(parse_path("id"), Action.KEEP, rule_id=0),
             FieldRule(parse_path("email"), Action.TRANSFORM, tr.hash(bytes(32)), rule_id=1)]
    body = b'{"id":"c-1","email":"first@example.com","email":"second@example.com","x":1}'
    with pytest.raises(NotLazy):
        compile_plan(rules).apply_lazy(lazy.parse(body))


def test_kept_whole_subtree_with_duplicates_reads_like_orjson() -> None:
    rules = [FieldRule(parse_path("a"), Action.KEEP, rule_id=0)]
    body = b'{"a":{"k":1,"k":2,"j":[{"z":1,"z":3}]},"b":1}'
    eager, lazy_ = both(rules, body)
    assert lazy_ == eager and lazy_[0] == {"a": {"k": 2, "j": [{"z": 3}]}}


@pytest.mark.parametrize("body", [
    b"18446744073709551616", b'{"n":-9223372036854775809}', b'{"n":1' + b"0" * 30 + b"}",  # orjson: floats
    b'[1,2,]', b'{"a":1} x', b"nan", b'"\\ud800"', b'"\xff"', b"",
    b"\xef\xbb\xbf0", b'\xef\xbb\xbf{"a":1}',  # a byte order mark: simdjson skips it, orjson refuses
])
def test_what_simdjson_refuses_is_not_lazy(body: bytes) -> None:
    with pytest.raises(NotLazy):
        lazy.parse(body)


def test_materialize_is_the_orjson_value() -> None:
    body = b'{"a":[1,2.5,{"b":null,"c":true}],"d":"\\u00e9\\n","e":-0.0,"f":18446744073709551615}'
    assert lazy.materialize(lazy.parse(body)) == orjson.loads(body)
    assert lazy.is_lazy(lazy.parse(body)) and not lazy.is_lazy(lazy.parse(b"1"))


def test_lazy_ok() -> None:
    keep = FieldRule(parse_path("items[*].id"), Action.KEEP, rule_id=0)
    each = (parse_path("items[*]"), parse_path("id"))
    assert compile_plan([keep]).lazy_ok() and compile_plan([keep]).lazy_ok(each)
    # guards read counts from the plain document
    guard = Guard(parse_path("items"), parse_path("n"), 10, 1)
    assert not compile_plan([keep], [guard]).lazy_ok()
    # an unfiltered root (unknown keys kept) would be materialized whole: no gain
    assert not compile_plan([FieldRule(parse_path("**"), Action.KEEP, rule_id=0)]).lazy_ok()
    # kept whole items: the subject would be read from an object whose key set the plan never sees
    whole = FieldRule(parse_path("items[*]"), Action.KEEP, rule_id=0)
    assert compile_plan([whole]).lazy_ok() and not compile_plan([whole]).lazy_ok(each)
    deep_each = (parse_path("items[*]"), parse_path("who.id"))
    assert not compile_plan([keep]).lazy_ok(deep_each)  # `who` is removed: never read by the plan
    keep_who = FieldRule(parse_path("items[*].who.id"), Action.KEEP, rule_id=1)
    assert compile_plan([keep, keep_who]).lazy_ok(deep_each)
    # a list the plan drops (or transforms), or a dropped object on the way to it, is never walked:
    # its items' key sets are never seen
    nested = (parse_path("data.items[*]"), parse_path("id"))
    keep_nested = FieldRule(parse_path("data.items[*].id"), Action.KEEP, rule_id=0)
    assert compile_plan([keep_nested]).lazy_ok(nested)
    for path, action, t in (("items", Action.DROP, None), ("items", Action.TRANSFORM, tr.hash(bytes(32)))):
        assert not compile_plan([keep, FieldRule(parse_path(path), action, t, rule_id=2)]).lazy_ok(each)
    for path, action, t in (("data", Action.DROP, None), ("data.items", Action.TRANSFORM, tr.hash(bytes(32)))):
        assert not compile_plan([keep_nested, FieldRule(parse_path(path), action, t, rule_id=2)]).lazy_ok(nested)


# ---------------------------------------------------------------- a list route, end to end (pure parts)
SUBJECTS = ["s1", "s2", "", "7"]
item_values = st.one_of(st.sampled_from(SUBJECTS), st.integers(-2, 8), st.booleans(), st.none(), documents)
list_items_text = st.lists(
    st.lists(st.tuples(st.sampled_from(["id", "who", "email", "x"]), item_values), max_size=5),
    max_size=4,
).map(lambda items: [(pairs,) for pairs in items])
list_rule_paths = st.sampled_from(["items[*].id", "items[*].email", "items[*]", "items", "items[*].who.id", "total",
                                   "*", "**", "items[*].*", "data.items[*].id", "data", "x"])


@st.composite
def list_rules(draw: st.DrawFn) -> list[FieldRule]:
    out = []
    for i in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(list(Action)))
        t = tr.hash(bytes(32)) if action is Action.TRANSFORM else None
        out.append(FieldRule(parse_path(draw(list_rule_paths)), action, t, rule_id=i))
    return out


def _flow(body: bytes, rules: list[FieldRule], each: Any, consented: set[str], lazy_: bool) -> Any:
    from veil.redact.items import keep_items, list_items

    plan = compile_plan(rules)
    doc = lazy.parse(body) if lazy_ else orjson.loads(body)
    doc, items, ids = list_items(doc, each, lazy_)
    kept, filtered = [], 0
    if items is not None:
        verdicts = {i: None if i in consented else "consent_missing" for i in ids if i is not None}
        kept, filtered = keep_items(items, ids, verdicts, each[1], lazy_)
    out, report = plan.apply_lazy(doc) if lazy_ else plan.apply(doc)
    return orjson.dumps(out), report, kept, filtered


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(list_items_text, list_rules(), st.sampled_from(["items[*]|id", "items[*]|who.id", "data.items[*]|id"]),
       st.sets(st.sampled_from(SUBJECTS)))
def test_a_lazy_list_flow_equals_the_orjson_flow_or_falls_back(
    items: Any, rules: list[FieldRule], each_text: str, consented: set[str]
) -> None:
    """Per-item consent and the plan on a lazy reading (when the plan allows it) give the output, the
    report, the subjects and the count of removed items an orjson parse gives, duplicates included."""
    list_path, subject_path = each_text.split("|")
    each = (parse_path(list_path), parse_path(subject_path))
    root: Any = ([("items", items), ("total", len(items))],)
    if list_path.startswith("data."):
        root = ([("data", root), ("x", 1)],)
    body = _text(root).encode()
    eager = _flow(body, rules, each, consented, False)
    if not compile_plan(rules).lazy_ok(each):
        return
    try:
        got = _flow(body, rules, each, consented, True)
    except NotLazy:
        return
    assert got == eager


@pytest.mark.parametrize("rules,each,body", [
    # the list is dropped: the plan never walks the items, so it cannot see their duplicate keys
    ([FieldRule(parse_path("items[*].id"), Action.KEEP, rule_id=0), FieldRule(parse_path("items"), Action.DROP,
                                                                                 rule_id=1)],
     "items[*]|id", b'{"items":[{"id":"s1","id":true,"email":{}}],"x":[{}]}'),
    # an object on the way to the list is dropped
    ([FieldRule(parse_path("data.items[*].id"), Action.KEEP, rule_id=0), FieldRule(parse_path("data"), Action.DROP,
                                                                                      rule_id=1)],
     "data.items[*]|id", b'{"data":{"items":[{"id":"s2","email":true,"id":{"id":false}}]}}'),
    # the list is kept whole (less a dropped key): an eager closure reads the items plain, last key wins
    ([FieldRule(parse_path("items[*].id"), Action.KEEP, rule_id=0),
      FieldRule((Key("items"), Deep()), Action.KEEP, rule_id=1),
      FieldRule(parse_path("items[*].*"), Action.DROP, rule_id=2)],
     "items[*]|id", b'{"items":[{"email":{"x":1},"id":"s1","id":7},{"id":null}]}'),
])
def test_items_the_plan_never_walks_are_not_read_lazily(rules: list[FieldRule], each: str, body: bytes) -> None:
    list_path, subject_path = each.split("|")
    parsed = (parse_path(list_path), parse_path(subject_path))
    assert not compile_plan(rules).lazy_ok(parsed)
    # and were they read lazily, the subjects would differ from an orjson parse (first vs last id)
    eager, lazy_ = (_flow(body, rules, parsed, {"s1", "s2"}, flag) for flag in (False, True))
    assert eager[2] != lazy_[2]


@pytest.mark.parametrize("key", ["a\x00b", "\ud800", "x\udfff"])
def test_keys_a_proxy_cannot_look_up_keep_the_plan_eager(key: str) -> None:
    """simdjson reads lookup keys as NUL-terminated UTF-8: `"a\\u0000b"` would find `a`."""
    rules = [FieldRule(parse_path("id"), Action.KEEP, rule_id=0), FieldRule((Key(key),), Action.KEEP, rule_id=1)]
    assert not lazy.lazy_key(key) and not compile_plan(rules).lazy_ok()
    each = (parse_path("items[*]"), (Key(key),))
    assert not compile_plan([FieldRule(parse_path("items[*].id"), Action.KEEP, rule_id=0)]).lazy_ok(each)
    body = orjson.dumps({"id": "c-1", "a": "SECRET"})
    if "\x00" in key:  # what the check prevents
        assert plan_output_lazily(rules, body) != compile_plan(rules).apply(orjson.loads(body))[0]


def plan_output_lazily(rules: list[FieldRule], body: bytes) -> Any:
    return compile_plan(rules).apply_lazy(lazy.parse(body))[0]


def test_a_top_level_array_is_read_lazily() -> None:
    rules = [FieldRule(parse_path("[*].id"), Action.KEEP, rule_id=0),
             FieldRule(parse_path("[*].email"), Action.TRANSFORM, tr.hash(bytes(32)), rule_id=1)]
    plan = compile_plan(rules)
    each = (parse_path("[*]"), parse_path("id"))
    assert plan.lazy_ok() and plan.lazy_ok(each)
    body = orjson.dumps([{"id": f"c-{i}", "email": f"{i}@example.com", "ssn": "x"} for i in range(50)])
    assert plan.apply_lazy(lazy.parse(body)) == plan.apply(orjson.loads(body))


def nesting(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max(map(nesting, node.values()), default=0)
    if isinstance(node, list):
        return 1 + max(map(nesting, node), default=0)
    return 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.tuples(documents, rule_sets(ANY)), listed()))
def test_a_lazy_output_is_no_deeper_than_the_depth_its_report_knows(case: tuple[Any, list[FieldRule]]) -> None:
    """Report.depth (what lets the flow skip its depth walk) bounds the lazy output's nesting: the plan's
    own structure and transforms' results; anything made plain whole leaves it unknown."""
    doc, rules = case
    plan = compile_plan(rules)
    if not plan.lazy_ok():
        return
    try:
        out, report = plan.apply_lazy(lazy.parse(orjson.dumps(doc)))
    except NotLazy:
        return
    if report.depth is not None:
        assert nesting(out) <= report.depth, plan.describe()
    eager_out, eager = plan.apply(doc)
    if eager.depth is not None:  # a native root filter that built all of its output knows it exactly
        assert plan.native and nesting(eager_out) == eager.depth


def test_the_depth_is_known_unless_a_container_was_kept_whole() -> None:
    keeps = [FieldRule(parse_path(p), Action.KEEP, rule_id=i) for i, p in
             enumerate(["items[*].id", "items[*].history[*].track", "items[*].tags"])]
    plan = compile_plan([*keeps, FieldRule(parse_path("items[*].email"), Action.TRANSFORM, tr.replace({"a": [1]}),
                                           rule_id=9)])
    flat = {"items": [{"id": 1, "email": "e", "history": [{"track": "t", "x": 1}], "tags": "a"}]}
    assert plan.apply_lazy(lazy.parse(orjson.dumps(flat)))[1].depth == 5  # {items:[{history:[{}]}]}; email 1+2
    deep = {"items": [{"id": 1, "tags": ["a", {"b": [1]}]}]}
    out, report = plan.apply_lazy(lazy.parse(orjson.dumps(deep)))
    assert report.depth is None and nesting(out) == 6  # deeper than the structure: it had to be walked
