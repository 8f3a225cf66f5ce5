"""The decision record's time: `now_iso` reads the clock datetime.now reads and writes what
`datetime.isoformat` writes (the date and time of day are formatted once per second)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veil.proxy.records import now_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.lists(st.integers(0, 4_102_444_800 * 10**9), min_size=1, max_size=5), st.integers(0, 2))
def test_now_iso_is_datetime_isoformat(stamps: list[int], near: int) -> None:
    # the same second again, the same second at 0 µs, and the next second: the cached part must follow
    sec = stamps[0] // 10**9 * 10**9
    for ns in [*stamps, sec, sec + 999_999_999, sec + 10**9 * near]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(time, "time_ns", lambda ns=ns: ns)
            got = now_iso()
        assert got == (EPOCH + timedelta(microseconds=ns // 1000)).isoformat()


def test_now_iso_is_now() -> None:
    before = datetime.now(UTC)
    got = datetime.fromisoformat(now_iso())
    assert before <= got <= datetime.now(UTC)
