"""The compiled parts of the redaction core (veil.redact._cplan, built by pip from `_cplan.c` where a C
compiler and Python's headers are; see hatch_build.py), or None where it was not built: then the
generated Python runs, with the same results (tests/redact/test_native.py compares the two).

`VEIL_NATIVE=0` in the environment turns it off for a comparison, or to rule it out."""

from __future__ import annotations

import os
from typing import Any

from veil.keys import KEYED_HASH_HEX
from veil.redact import transforms as tf
from veil.redact.transforms import Transform, TransformTypeError

GONE: Any = object()  # a field-plan closure's "this node is removed" result (veil.redact._compile)
# The ev key under which a native top filter leaves its output's depth (None: not known; see _cplan.c)
DEPTH: Any = type("Depth", (), {"__repr__": lambda self: "DEPTH"})()


def _load() -> Any:
    try:
        from veil.redact import _cplan as mod
    except ImportError:
        return None
    mod.configure(GONE, TransformTypeError, DEPTH)
    return mod


cplan: Any = _load()  # the module, also when VEIL_NATIVE=0 (tests compare both)
ENABLED = cplan is not None and os.environ.get("VEIL_NATIVE", "1") != "0"
DEPTH_LIMIT = 4096  # _cplan.depth_ok's largest limit (its walk recurses that deep at most)


def fast(t: Transform) -> Any:
    """`t` with its common values computed in C (_cplan.Xform; every other value, and every refusal,
    still goes to `t`), or `t` itself where the module is not built or `t` has no compiled form.
    tests/redact/test_native_transforms.py compares the two on random values and arguments."""
    if cplan is None:
        return t
    made = _xform_args(t)
    return t if made is None else cplan.Xform(t, *made)


def _xform_args(t: Transform) -> tuple[int, int, int, str, bytes] | None:
    """Xform's (kind, a, b, text, key) for `t`; None where it has no compiled form, or an argument the
    C does not take (larger than _cplan.ARG_MAX, a float width, non-ASCII text, negative decimals)."""
    def small(*ns: int) -> bool:
        return all(type(n) is int and 0 <= n <= cplan.ARG_MAX for n in ns)

    if type(t) is tf.Mask and small(t.first, t.last) and len(t.char) == 1 and t.char.isascii():
        return cplan.X_MASK, t.first, t.last, t.char, b""
    if type(t) is tf.Hash and t.prefix.isascii():
        return cplan.X_HASH, 0, t.digits, t.prefix, t.key
    if type(t) is tf.Prefix and small(t.n):
        return cplan.X_PREFIX, t.n, 0, "", b""
    if type(t) is tf.Bucket and type(t.width) is int and small(t.width) and t.width > 0:
        return cplan.X_BUCKET, t.width, 0, "", b""
    if type(t) is tf.Date:
        return cplan.X_DATE, 1 if t.granularity == "year" else 0, 0, "", b""
    if type(t) is tf.Round and small(t.decimals) and t.decimals <= 15:
        return cplan.X_ROUND, t.decimals, 0, "", b""
    if type(t) is tf.Ip and small(t.v4_prefix) and t.v4_prefix <= 32:
        return cplan.X_IP, t.v4_prefix, 0, "", b""
    return None  # null and replace are written without a call (Transform.fixed)


def keyed_hashes(key: bytes, values: list[str], context: str) -> list[str] | None:
    """veil.keys.keyed_hashes computed in C (HMAC-SHA256 under `key` of context, NUL, value, as many hex
    digits as veil.keys keeps), or None where the module is not built or off, or a value is not an
    ASCII str: the caller then runs veil.keys.keyed_hashes."""
    if not ENABLED:
        return None
    out: list[str] | None = cplan.keyed_hexes(key, context.encode(), values, KEYED_HASH_HEX)
    return out
