"""The compiled transforms (veil.redact._cplan.Xform, made by native.fast) against veil.redact.transforms,
the reference: on random values and arguments, the same result of the same type, or the same exception.
Also the pseudonyms of a list response (native.keyed_hashes) against veil.keys.keyed_hashes."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil.keys import keyed_hashes
from veil.redact import native
from veil.redact import transforms as tf
from veil.redact.transforms import Transform

pytestmark = pytest.mark.skipif(native.cplan is None, reason="veil.redact._cplan is not built here")
SETTINGS = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(max_codepoint=127), max_size=40),  # ASCII: what the C takes
    st.text("\"\\\n\r\t\b\f\x00\x01\x1f\x7f ab", max_size=12),  # every JSON escape
    st.emails(),
)
dates = st.one_of(
    st.dates().map(str),
    st.builds("{:04d}-{:02d}-{:02d}".format, st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32)),
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2024-02-29", "2023-02-29", "1900-02-29", "2000-02-29", "0000-01-01", "2024-1-01",
                     "2024/01/01", "20240101", "2024-01-01T10:00:00Z", "٢٠٢٤-01-01", "2024-01-0a"]),
)
ips = st.one_of(
    st.ip_addresses().map(str),
    st.builds("{}.{}.{}.{}".format, *[st.integers(0, 300)] * 4),
    st.sampled_from(["01.2.3.4", "1.2.3", "1.2.3.4.5", "1..2.3", "1.2.3.4 ", "1.2.3.0004", "::ffff:10.1.2.3",
                     "255.255.255.255", "0.0.0.0", "1.2.3.-4", "+1.2.3.4", "1.2.3.4\n"]),
)
floats = st.one_of(
    st.floats(),
    st.floats(-1e4, 1e4),
    st.integers(-(10**9), 10**9).map(lambda n: n / 1000 + 0.0005),  # near ties
    st.integers(0, 2**64 - 1).map(lambda n: struct.unpack("d", struct.pack("Q", n))[0]),
)
values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), floats, texts, dates, ips,
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
transforms = st.one_of(
    st.builds(tf.mask, st.integers(0, 20), st.integers(0, 20), st.sampled_from(["*", "#", "x", "é", "🙂"])),
    st.builds(tf.hash, st.binary(min_size=16, max_size=100), prefix=st.sampled_from(["ps_", "", "h:", "é_"])),
    st.builds(tf.prefix, st.integers(0, 12)),
    st.builds(tf.bucket, st.one_of(st.integers(1, 10**6), st.sampled_from([2.5, 0.1, 1e-9]))),
    st.builds(tf.date, st.sampled_from(["month", "year"])),
    st.builds(tf.round_, st.integers(-15, 15)),
    st.builds(tf.ip, st.integers(0, 32), st.integers(0, 128)),
)


def outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        r = fn(value)
    except Exception as exc:  # the same exception is part of the contract
        return "raised", (type(exc), str(exc))
    if isinstance(r, float):  # -0.0 == 0.0 and nan != nan: compare the bits
        return type(r).__name__, struct.pack("d", r)
    return type(r).__name__, r


@SETTINGS
@given(transforms, values)
def test_compiled_transforms_agree_with_the_reference(t: Transform, value: Any) -> None:
    fast = native.fast(t)
    assert outcome(fast, value) == outcome(t, value)


@SETTINGS
@given(st.builds(tf.round_, st.integers(0, 15)), floats)
def test_round_agrees_on_floats(t: Transform, value: float) -> None:
    assert outcome(native.fast(t), value) == outcome(t, value)


def test_what_gets_a_compiled_form() -> None:
    key = bytes(range(32))
    compiled = [tf.mask(1, 2), tf.hash(key), tf.prefix(3), tf.bucket(10), tf.date("year"), tf.round_(2), tf.ip()]
    for t in compiled:
        assert type(native.fast(t)) is native.cplan.Xform, t
    # null and replace are written without a call; float widths, non-ASCII arguments and negative
    # decimals stay in Python as a whole
    for t in [tf.null(), tf.replace("x"), tf.bucket(2.5), tf.mask(char="é"), tf.hash(key, prefix="é"), tf.round_(-1)]:
        assert native.fast(t) is t, t


def test_common_values_take_the_compiled_path() -> None:
    class Refuse(tf.Transform):  # a reference that must not be called: the C computes these alone
        def __call__(self, value: Any) -> Any:
            raise AssertionError(f"fell back for {value!r}")

    refuse = Refuse()
    cp = native.cplan
    made = {
        "mask": native.cplan.Xform(refuse, cp.X_MASK, 1, 4, "*", b""),
        "hash": native.cplan.Xform(refuse, cp.X_HASH, 0, tf.Hash.digits, "ps_", bytes(32)),
        "prefix": native.cplan.Xform(refuse, cp.X_PREFIX, 3, 0, "", b""),
        "bucket": native.cplan.Xform(refuse, cp.X_BUCKET, 1000, 0, "", b""),
        "month": native.cplan.Xform(refuse, cp.X_DATE, 0, 0, "", b""),
        "round": native.cplan.Xform(refuse, cp.X_ROUND, 1, 0, "", b""),
        "ip": native.cplan.Xform(refuse, cp.X_IP, 24, 0, "", b""),
    }
    assert made["mask"]("+1 555 0100") == tf.mask(1, 4)("+1 555 0100")
    assert made["mask"](12345.5) == tf.mask(1, 4)(12345.5)
    assert made["hash"]("a@example.com") == tf.hash(bytes(32))("a@example.com")
    assert made["hash"](None) == tf.hash(bytes(32))(None) and made["hash"](-7) == tf.hash(bytes(32))(-7)
    assert made["prefix"]("ABCDEF") == "ABC"
    assert made["bucket"](-1) == "-1000--1" and made["bucket"](123456) == "123000-123999"
    assert made["month"]("2024-02-29") == "2024-02"
    assert made["round"](45.66) == 45.7 and made["round"](3) == 3
    assert made["ip"]("192.168.31.77") == "192.168.31.0"


@pytest.mark.parametrize("bad", [(1, -1, 0, "*", b""), (9, 0, 0, "", b""), (1, 0, 0, "**", b""), (2, 0, 0, "é", b""),
                                 (4, 0, 0, "", b""), (6, 16, 0, "", b""), (7, 33, 0, "", b"")])
def test_arguments_out_of_range_are_refused(bad: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        native.cplan.Xform(tf.null(), *bad)


def test_mask_arguments_at_their_largest() -> None:
    """first + last of two arguments at the largest the C takes: no overflow, the whole value masked."""
    big = 0x7FFFFFFF
    for t in [tf.mask(big, big), tf.mask(big, 0), tf.mask(0, big), tf.mask(big - 1, 1)]:
        fast = native.fast(t)
        assert type(fast) is native.cplan.Xform
        for v in ["", "a", "abcdef", 12345, -1.5]:
            assert fast(v) == t(v)


def test_a_mask_made_without_its_factory_stays_in_python() -> None:
    """tf.Mask with a char the factory refuses: native.fast keeps the Python transform (no ValueError)."""
    for t in [tf.Mask(1, 1, "ab"), tf.Mask(0, 0, "")]:
        assert native.fast(t) is t


def test_an_uninitialized_transform_refuses_to_run() -> None:
    with pytest.raises(TypeError):
        native.cplan.Xform.__new__(native.cplan.Xform)("x")


@SETTINGS
@given(st.binary(min_size=0, max_size=100), st.text(max_size=12),
       st.lists(st.one_of(st.text(st.characters(max_codepoint=127), max_size=30), st.text(max_size=5)), max_size=8))
def test_keyed_hashes_agree(key: bytes, context: str, ids: list[str]) -> None:
    if not native.ENABLED:
        pytest.skip("VEIL_NATIVE=0")
    fast = native.keyed_hashes(key, ids, context)
    if all(i.isascii() for i in ids):
        assert fast == keyed_hashes(key, ids, context=context)
    else:
        assert fast is None  # the caller runs veil.keys.keyed_hashes


def test_round_is_exact_where_floating_point_rounding_is_not() -> None:
    # values whose product with 10^n lands near .5: the exact way decides them
    t = tf.round_(2)
    for v in [2.675, 1.005, 0.125, 0.375, -2.675, 1e-300, 5e-324, 123456789.125, 0.285, 1.255]:
        assert outcome(native.fast(t), v) == outcome(t, v), v
    assert math.copysign(1.0, native.fast(t)(-0.001)) == -1.0  # -0.0, as round() gives
