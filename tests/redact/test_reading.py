"""Reading documents: check_depth (the bracket-count shortcut never lets a too-deep enforced document
out) and list items on lazy documents."""

from __future__ import annotations

import orjson
import pytest

from veil.errors import Unenforceable as EnforceError
from veil.redact import Action, FieldRule, compile_plan
from veil.redact import transforms as tr
from veil.redact.paths import Key
from veil.redact.reading import check_depth


def nested(n: int) -> object:
    doc: object = 1
    for _ in range(n):
        doc = {"a": doc}
    return doc


def test_a_body_with_few_brackets_skips_the_walk() -> None:
    doc = nested(3)
    check_depth(doc, 3, orjson.dumps(doc))
    with pytest.raises(EnforceError):
        check_depth(nested(4), 3, orjson.dumps(nested(4)))


def test_depth_added_by_a_transform_is_counted() -> None:
    replace = tr.replace({"x": [{"y": 1}]})
    assert replace.added_depth() == 3
    assert tr.mask().added_depth() == 0
    plan = compile_plan([FieldRule((Key("a"),), Action.TRANSFORM, replace, rule_id=0)])
    assert plan.added_depth == 3
    body = b'{"a": 1}'
    out, _ = plan.apply(orjson.loads(body))
    assert out == {"a": {"x": [{"y": 1}]}}
    with pytest.raises(EnforceError):  # 1 bracket in the input, but 4 levels leave
        check_depth(out, 3, body, plan.added_depth)
    check_depth(out, 4, body, plan.added_depth)


# ---------------------------------------------------------------- lazy list documents
def test_plain_list_makes_the_path_plain_and_keeps_items_lazy() -> None:
    from veil.redact import lazy
    from veil.redact.items import plain_list
    from veil.redact.items import subject_at as subject_of
    from veil.redact.paths import parse_path

    doc, items = plain_list(lazy.parse(b'{"page":{"items":[{"id":"a","x":{"y":1}},{"id":7}]},"n":2}'),
                            parse_path("page.items[*]"))
    assert type(doc) is dict and type(doc["page"]) is dict and type(items) is list
    assert doc["page"]["items"] is items and all(lazy.is_lazy(i) for i in items)
    assert [subject_of(i, parse_path("id")) for i in items] == ["a", "7"]
    assert lazy.materialize(doc) == orjson.loads(b'{"page":{"items":[{"id":"a","x":{"y":1}},{"id":7}]},"n":2}')
    root, top = plain_list(lazy.parse(b'[{"id":"a"}]'), parse_path("[*]"))
    assert root is top and len(top) == 1


def test_plain_list_adds_nothing_where_the_list_is_missing() -> None:
    from veil.redact import lazy
    from veil.redact.items import plain_list
    from veil.redact.paths import parse_path

    for body in (b'{"n":1}', b'{"items":{"a":1}}', b'{"items":null}', b"[1]"):
        doc, items = plain_list(lazy.parse(body), parse_path("items[*]"))
        assert items is None and lazy.materialize(doc) == orjson.loads(body)


def test_duplicate_keys_on_the_list_path_or_the_subject_path_are_not_lazy() -> None:
    from veil.redact import lazy
    from veil.redact.items import duplicate_keys_on, plain_list
    from veil.redact.lazy import NotLazy
    from veil.redact.paths import parse_path

    with pytest.raises(NotLazy):
        plain_list(lazy.parse(b'{"items":[],"items":[{"id":"a"}]}'), parse_path("items[*]"))
    _, items = plain_list(lazy.parse(b'{"items":[{"id":"","id":"b"},{"who":{"id":"a","id":"b"}},{"id":"c"}]}'),
                          parse_path("items[*]"))
    assert items is not None
    assert duplicate_keys_on(items[0], parse_path("id"))
    assert duplicate_keys_on(items[1], parse_path("who.id"))
    assert not duplicate_keys_on(items[2], parse_path("id"))
    assert not duplicate_keys_on({"id": "a"}, parse_path("id"))  # plain objects cannot repeat keys


def test_subjects_of_reads_as_subject_of() -> None:
    from veil.redact import lazy
    from veil.redact.items import subject_at as subject_of
    from veil.redact.items import subjects_of
    from veil.redact.paths import parse_path

    items = [{"id": "a"}, {"id": ""}, {"id": 7}, {"id": True}, {"id": 1.5}, {"id": None}, {}, [1], "s",
             {"id": {"x": 1}}, {"who": {"id": "w"}}, {"id": -3}]
    lazy_items = list(lazy.parse(orjson.dumps(items)))
    for path in ("id", "who.id", "[*]"):
        p = parse_path(path)
        want = [subject_of(i, p) for i in items]
        assert subjects_of(items, p) == want == subjects_of(lazy_items, p)
    assert subjects_of(items, parse_path("id")) == ["a", None, "7", None, None, None, None, None, None, None, None,
                                                     "-3"]


def test_read_choice_probes_both_ways_then_takes_the_cheaper_and_rechecks() -> None:
    from veil.redact.reading import ReadChoice

    rc = ReadChoice()
    costs = {True: 3.0, False: 1.0}  # parsing whole is cheaper here
    ways = []
    for _ in range(2 * ReadChoice.PROBES):
        way = rc.pick()
        ways.append(way)
        rc.record(way, costs[way])
    assert ways.count(True) == ways.count(False) == ReadChoice.PROBES  # alternating probes
    assert rc.lazy is False
    picks = [rc.pick() for _ in range(ReadChoice.EVERY)]
    assert picks.count(True) == 1  # the other way, once per EVERY bodies
    # the data changes: lazy becomes the cheaper way; the rechecks and the recorded costs move the choice
    costs = {True: 0.5, False: 2.0}
    for _ in range(ReadChoice.EVERY * ReadChoice.PROBES):
        way = rc.pick()
        rc.record(way, costs[way])
    assert rc.lazy is True
    state = rc.state()
    assert state["lazy"] is True and set(state["cpu_s_per_mib"]) == {"lazy", "whole"}
