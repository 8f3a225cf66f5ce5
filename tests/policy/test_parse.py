"""Parsing: errors carry file:line:col, a caret snippet and a hint naming what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.errors import Diagnostics
from veil.policy.fmt import parse_module
from veil.policy.load import load_policy


def _error(text: str) -> Diagnostics:
    with pytest.raises(Diagnostics) as info:
        parse_module(text, "p.veil")
    return info.value


def test_unexpected_token_has_location_and_hint() -> None:
    d = _error("purpose p {\n  basis contract\n  keep x\n}\n").items[0]
    assert d.code == "parse_error"
    assert (str(d.location), d.message) == ("p.veil:3:3", "unexpected 'keep'")
    assert d.hint == ("expected 'automated_decisions', 'basis', 'consent', 'consent_from', 'consent_max_age', "
                      "'description', 'gpc', '}', ...")


def test_unexpected_character() -> None:
    d = _error("category a = x ; y\n").items[0]
    assert (str(d.location), d.message) == ("p.veil:1:16", "unexpected character ';'")


def test_missing_closing_brace_hint() -> None:
    d = _error('purpose p {\n  basis contract\n').items[0]
    assert d.message == "unexpected end of file"
    assert str(d.location) == "p.veil:2:17"
    assert d.hint is not None and d.hint.endswith("(is a '}' missing?)")


def test_render_shows_caret_under_the_column() -> None:
    out = _error("route GET /a {\n  for p { keep x y }\n}\n").render()
    assert "p.veil:2:18: error[parse_error]: unexpected 'y'" in out
    assert "    2 |   for p { keep x y }\n      |                  ^" in out


def test_bad_escape_is_located() -> None:
    d = _error('purpose p { description "a\\qb" }').items[0]
    assert (d.code, str(d.location)) == ("bad_string", "p.veil:1:25")
    assert d.hint == 'use JSON escapes: \\" \\\\ \\n \\t \\uXXXX'


def test_huge_number_is_a_diagnostic_not_a_crash() -> None:
    d = _error("caller c {\n  vendor " + "9" * 5000 + "\n}\n").items[0]
    assert (d.code, str(d.location)) == ("number_invalid", "p.veil:2:3")


def test_keywords_are_contextual() -> None:
    m = parse_module("route GET /a { for p { keep keep, drop.x, \"for\" } }", "p.veil")
    assert [t.text for t in m.routes[0].rules[0].body[0].targets] == ["keep", "drop.x", '"for"']


def test_comments_are_collected_but_not_inside_strings() -> None:
    m = parse_module('# one\npurpose p { description "a # b" } # two\n', "p.veil")
    assert m.comments == ((1, "# one"), (2, "# two"))


def test_load_reports_errors_of_every_file_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.veil").write_text("purpose {\n")
    (tmp_path / "a.veil").write_text("category = x\n")
    with pytest.raises(Diagnostics) as info:
        load_policy([tmp_path])
    rendered = info.value.render()
    assert rendered.index("a.veil:1:10") < rendered.index("b.veil:1:9")


def test_unreadable_and_empty_sets(tmp_path: Path) -> None:
    with pytest.raises(Diagnostics) as info:
        load_policy([tmp_path])
    assert [d.code for d in info.value.items] == ["policy_empty"]
    with pytest.raises(Diagnostics) as info:
        load_policy([tmp_path / "missing.veil"])
    assert [d.code for d in info.value.items] == ["file_unreadable"]
