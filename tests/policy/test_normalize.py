"""normalize_path: the canonical-path shortcut must agree with the full rules on every input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import PathInvalid
from veil.policy.normalize import _PLAIN, _normalize, normalize_path

ALPHABET = [b"/", b".", b"a", b"Z", b"0", b"-", b"_", b"~", b":", b"@", b"%", b"2f", b"2e", b"25", b";",
            b"\\", b"\x00", b"\x7f", b" ", b"?", b"#", b"\xc3\xa9", b"\xff", b"%C3%A9", b"'", b"(", b"+"]


def outcome(fn: object, raw: bytes) -> object:
    try:
        return fn(raw)  # type: ignore[operator]
    except PathInvalid:
        return "invalid"


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=12).map(b"".join))
def test_shortcut_agrees_with_the_full_rules(raw: bytes) -> None:
    assert outcome(normalize_path, raw) == outcome(_normalize, raw)


@pytest.mark.parametrize("raw", [b"/", b"/customers/c-000123", b"/a/b.c/", b"/v1/x:y@z"])
def test_plain_paths_take_the_shortcut(raw: bytes) -> None:
    assert _PLAIN.fullmatch(raw)
    assert normalize_path(raw) == _normalize(raw)


@pytest.mark.parametrize("raw", [b"/a//b", b"/./a", b"/a/..", b"/.well-known/x", b"/a%2Fb", b"/a;b", b"a/b", b"//"])
def test_anything_unusual_takes_the_full_rules(raw: bytes) -> None:
    assert not _PLAIN.fullmatch(raw)
