"""veil.keys.hmac_sha256: the precomputed-pads HMAC equals the standard library's."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from veil.keys import hmac_sha256, keyed_hash, keyed_hashes


@given(st.binary(min_size=0, max_size=200), st.binary(max_size=300))
def test_hmac_sha256_is_the_standard_hmac(key: bytes, msg: bytes) -> None:
    assert hmac_sha256(key, msg) == hmac.digest(key, msg, "sha256")
    assert hmac_sha256(key, msg) == hmac_sha256(key, msg)  # the cached pads are not consumed


def test_keyed_hash_is_unchanged() -> None:
    key = bytes(range(32))
    want = hmac.digest(key, b"ctx\x00value", "sha256").hex()[:32]
    assert keyed_hash(key, "value", context="ctx") == want


@given(st.binary(min_size=1, max_size=100), st.lists(st.text(max_size=20), max_size=5))
def test_keyed_hashes_equal_keyed_hash_one_by_one(key: bytes, values: list[str]) -> None:
    assert keyed_hashes(key, values, context="veil-subject") == [
        keyed_hash(key, v, context="veil-subject") for v in values]
