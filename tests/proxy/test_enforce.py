"""check_depth: the bracket-count shortcut never lets a too-deep enforced document out."""

from __future__ import annotations

import orjson
import pytest

from veil.proxy.enforce import EnforceError, check_depth
from veil.redact import Action, FieldRule, compile_plan
from veil.redact import transforms as tr
from veil.redact.paths import Key


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
