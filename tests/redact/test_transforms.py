from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veil.errors import VeilError
from veil.redact import transforms as tr
from veil.redact.transforms import TransformArgError, TransformTypeError

KEY = bytes(range(32))


def test_null_and_replace_take_anything() -> None:
    assert tr.null()({"a": [1]}) is None
    r = tr.replace({"redacted": True})
    out = r("x")
    assert out == {"redacted": True}
    out["redacted"] = False  # a copy: later edits do not leak into the next replacement
    assert r([1]) == {"redacted": True}
    assert tr.replace("n/a")(None) == "n/a"
    with pytest.raises(TransformArgError):
        tr.replace({1, 2})


@pytest.mark.parametrize(
    ("args", "value", "want"),
    [
        ((0, 4), "+1-415-555-0199", "***********0199"),
        ((1, 1), "secret", "s****t"),
        ((2, 0), "abcdef", "ab****"),
        ((0, 0), "abc", "***"),
        ((3, 3), "abcdef", "******"),  # first+last >= len: nothing revealed
        ((5, 5), "abc", "***"),
        ((0, 0), "", ""),
        ((1, 1), "é中文x", "é**x"),
        ((0, 2), 123456, "****56"),
        ((1, 0), -42, "-**"),
        ((0, 1), 3.5, "**5"),
    ],
)
def test_mask(args: tuple[int, int], value: Any, want: str) -> None:
    assert tr.mask(*args)(value) == want


def test_mask_char_and_types() -> None:
    assert tr.mask(1, 0, "#")("abc") == "a##"
    for bad in (None, True, [1], {"a": 1}):
        with pytest.raises(TransformTypeError) as info:
            tr.mask()(bad)
        assert info.value.code == "transform_type"
        assert isinstance(info.value, VeilError)
    with pytest.raises(TransformArgError):
        tr.mask(-1)
    with pytest.raises(TransformArgError):
        tr.mask(char="**")


def test_type_error_message_names_type_not_value() -> None:
    with pytest.raises(TransformTypeError) as info:
        tr.prefix(3)({"ssn": "123-45-6789"})
    assert "123" not in str(info.value) and "object" in str(info.value)


def test_hash_is_keyed_typed_and_stable() -> None:
    h = tr.hash(KEY)
    a = h("alice@example.com")
    assert re.fullmatch(r"ps_[0-9a-f]{24}", a)
    assert h("alice@example.com") == a
    assert h(42) != h("42")
    assert h(1) != h(True) != h(None)
    assert h(1.0) != h(1)
    assert h({"b": 1, "a": 2}) == h({"a": 2, "b": 1})  # canonical JSON: key order does not matter
    assert h([1, 2]) != h([2, 1])
    assert tr.hash(bytes(32))("alice@example.com") != a  # another key (purpose) cannot be joined
    assert tr.hash(KEY, prefix="u_")("x").startswith("u_")
    assert h("") != h(None) and h("é") != h("e")
    assert h("\ud800").startswith("ps_")  # lone surrogates do not crash
    with pytest.raises(TransformTypeError):
        h(float("nan"))
    with pytest.raises(TransformArgError):
        tr.hash(b"short")


def test_hash_repr_and_hash_hide_key() -> None:
    t = tr.hash(KEY)
    assert KEY.hex() not in repr(t) and str(KEY) not in repr(t)
    assert {t, tr.hash(KEY)} == {t}
    assert t != tr.hash(bytes(32))
    assert len({tr.mask(1), tr.mask(1), tr.replace([1]), tr.replace([1]), tr.null()}) == 3


@pytest.mark.parametrize(
    ("n", "value", "want"),
    [(3, "94107", "941"), (0, "abc", ""), (10, "ab", "ab"), (2, "", ""), (2, "日本語", "日本")],
)
def test_prefix(n: int, value: str, want: str) -> None:
    assert tr.prefix(n)(value) == want


def test_prefix_rejects_non_strings() -> None:
    with pytest.raises(TransformTypeError):
        tr.prefix(3)(94107)
    with pytest.raises(TransformArgError):
        tr.prefix(-1)


@pytest.mark.parametrize(
    ("width", "value", "want"),
    [
        (10, 34, "30-39"),
        (10, 30, "30-39"),
        (10, 39, "30-39"),
        (10, 40, "40-49"),
        (10, 0, "0-9"),
        (10, -1, "-10--1"),
        (10, -10, "-10--1"),
        (5, 12, "10-14"),
        (10, 34.5, "30.0-40.0"),
        (10, 40.0, "40.0-50.0"),
        (10, -0.5, "-10.0-0.0"),
        (2.5, 3, "2.5-5.0"),
        (1, 10**20, f"{10**20}-{10**20}"),
    ],
)
def test_bucket(width: int | float, value: int | float, want: str) -> None:
    assert tr.bucket(width)(value) == want


def test_bucket_rejects() -> None:
    for bad in (True, "34", None, float("inf"), float("nan"), [1]):
        with pytest.raises(TransformTypeError):
            tr.bucket(10)(bad)
    for w in (0, -5, True, float("inf")):
        with pytest.raises(TransformArgError):
            tr.bucket(w)


@pytest.mark.parametrize(
    ("gran", "value", "want"),
    [
        ("month", "2026-11-05", "2026-11"),
        ("year", "2026-11-05", "2026"),
        ("month", "2024-02-29", "2024-02"),
        ("month", "2026-11-30T23:30:00-05:00", "2026-11"),
        ("month", "2026-01-01T00:00:00Z", "2026-01"),
        ("year", "0999-12-31", "0999"),
        ("month", "2026-03-04T05:06:07.123456", "2026-03"),
    ],
)
def test_date(gran: str, value: str, want: str) -> None:
    assert tr.date(gran)(value) == want


@pytest.mark.parametrize("bad", ["2023-02-29", "", "yesterday", "2026-13-01", 20261105, None, "11/05/2026"])
def test_date_rejects(bad: Any) -> None:
    with pytest.raises(TransformTypeError):
        tr.date("month")(bad)


def test_date_granularity_checked() -> None:
    with pytest.raises(TransformArgError):
        tr.date("day")


def test_round() -> None:
    r2 = tr.round_(2)
    assert r2(37.774929) == 37.77
    assert r2(-122.419416) == -122.42
    assert r2(5) == 5
    assert tr.round_(0)(2.5) == 2.0
    assert tr.round_(-2)(1234) == 1200
    for bad in (True, "1.5", None, float("nan")):
        with pytest.raises(TransformTypeError):
            r2(bad)
    with pytest.raises(TransformArgError):
        tr.round_(99)


@pytest.mark.parametrize(
    ("args", "value", "want"),
    [
        ((), "203.0.113.77", "203.0.113.0"),
        ((16,), "203.0.113.77", "203.0.0.0"),
        ((32,), "203.0.113.77", "203.0.113.77"),
        ((0,), "203.0.113.77", "0.0.0.0"),
        ((), "0.0.0.0", "0.0.0.0"),
        ((), "255.255.255.255", "255.255.255.0"),
        ((), "2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ((24, 64), "2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3:8d3::"),
        ((), "::1", "::"),
        ((), "::", "::"),
        ((), "::ffff:192.168.1.77", "::ffff:192.168.1.0"),
        ((8,), "::ffff:192.168.1.77", "::ffff:192.0.0.0"),
        ((), "fe80::1%eth0", "fe80::"),
    ],
)
def test_ip(args: tuple[int, ...], value: str, want: str) -> None:
    assert tr.ip(*args)(value) == want


@pytest.mark.parametrize("bad", ["", "1.2.3", "256.1.1.1", "1.2.3.4/24", "example.com", 3232235777, None])
def test_ip_rejects(bad: Any) -> None:
    with pytest.raises(TransformTypeError):
        tr.ip()(bad)


def test_ip_prefix_bounds() -> None:
    with pytest.raises(TransformArgError):
        tr.ip(33)
    with pytest.raises(TransformArgError):
        tr.ip(24, 129)


def test_transforms_are_frozen_dataclasses_with_names() -> None:
    t = tr.mask(1, 2)
    assert (t.name, t.first, t.last, t.char) == ("mask", 1, 2, "*")
    with pytest.raises(AttributeError):
        t.first = 3  # type: ignore[misc]
    names = {f().name for f in (tr.null, lambda: tr.replace(1), lambda: tr.hash(KEY), lambda: tr.prefix(1),
                                lambda: tr.bucket(1), lambda: tr.date("year"), lambda: tr.round_(1), tr.ip)}
    assert names == {"null", "replace", "hash", "prefix", "bucket", "date", "round", "ip"}


def test_all_is_sorted_and_complete() -> None:
    assert tr.__all__ == sorted(tr.__all__)
    import veil.redact as redact

    assert redact.__all__ == sorted(redact.__all__)
    assert all(hasattr(redact, n) for n in redact.__all__)


ip_like = st.one_of(
    st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t))),
    st.text("0123456789.:/af ", max_size=18),
    st.lists(st.sampled_from(["0", "1", "9", ".", "٣", "²", "-", "+", "00", "255", "256", "010"]), max_size=9).map(
        "".join),
)


@settings(max_examples=500, deadline=None)
@given(ip_like, st.integers(0, 32))
def test_the_ipv4_fast_path_reads_as_ipaddress(value: str, prefix: int) -> None:
    """`ip` reads dotted quads itself; whatever it returns, or refuses, ipaddress would too."""
    t = tr.ip(prefix, 48)
    assert isinstance(t, tr.Ip)
    try:
        want: Any = t.general(value)
    except TransformTypeError:
        want = TransformTypeError
    try:
        got: Any = t(value)
    except TransformTypeError:
        got = TransformTypeError
    assert got == want
