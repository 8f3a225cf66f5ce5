"""Retention: the period (configured, or the policy's longest, capped), local segments removed once
shipped or past retention behind a signed marker that verification understands, and the store's
partitions dropped through ShipControl."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.audit.conftest import decision
from veil.audit import AuditLog, verify
from veil.audit._chain import pruned_path, segments
from veil.audit.retention import prune_local, retention_days
from veil.keys import KeyRing, generate_key


def test_the_period_is_the_longest_stated_capped() -> None:
    assert retention_days(None, 760.0, ["13 months", "30 days", None]) == pytest.approx(395.6875)
    assert retention_days(None, 100.0, ["13 months"]) == 100.0  # capped
    assert retention_days(None, 760.0, [None, None]) == 760.0  # none stated: the cap
    assert retention_days(90.0, 760.0, ["13 months"]) == 90.0  # configured wins


async def rotated_log(path: Path, ring: KeyRing, n: int = 120) -> AuditLog:
    log = AuditLog(path, ring, flush_interval=0, max_bytes=3000)
    await log.start()
    for i in range(n):
        await log.append(decision(i))
    await log.close()
    return log


def age(path: Path, days: float) -> None:
    t = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (t, t))


async def test_shipped_segments_go_behind_a_signed_marker(tmp_path: Path, ring: KeyRing) -> None:
    log = await rotated_log(tmp_path / "decisions.log", ring)
    segs = segments(log.path)
    assert len(segs) > 4
    third_last = orjson.loads(segs[2][1].read_bytes().splitlines()[-1])["seq"]
    removed = prune_local(log.path, ring, shipped_seq=third_last, keep_local_days=0, retention=400)
    assert [n for n, _ in segments(log.path)] == [n for n, _ in segs[3:]]
    assert removed == third_last
    marker = orjson.loads(pruned_path(log.path).read_bytes())
    assert (marker["through_seq"], marker["records"], marker["reason"]) == (third_last, third_last, "shipped")
    assert marker["genesis"]  # the mac of seq 1, remembered for the shipper
    result = verify([log.path], ring)
    assert result.ok, result.render()
    assert result.notes == (f"decisions.log: {third_last} records up to seq {third_last} removed (shipped, "
                            f"at {marker['at']})",)
    # keep_local: segments written less than a day ago stay
    assert prune_local(log.path, ring, shipped_seq=log.seq, keep_local_days=1, retention=400) == 0
    for _, p in segments(log.path):
        age(p, 2)
    assert prune_local(log.path, ring, shipped_seq=log.seq, keep_local_days=1, retention=400) > 0
    assert segments(log.path) == [] and verify([log.path], ring).ok  # the active file is never removed


async def test_unshipped_segments_stay(tmp_path: Path, ring: KeyRing) -> None:
    log = await rotated_log(tmp_path / "decisions.log", ring)
    assert prune_local(log.path, ring, shipped_seq=0, keep_local_days=0, retention=400) == 0
    assert not pruned_path(log.path).exists()


async def test_without_shipping_segments_go_past_retention(tmp_path: Path, ring: KeyRing) -> None:
    log = await rotated_log(tmp_path / "decisions.log", ring)
    assert prune_local(log.path, ring, shipped_seq=None, keep_local_days=0, retention=10_000) == 0
    # each segment ends in its rotation checkpoint, written now: three days on, with one day of
    # retention, every segment is past it
    removed = prune_local(log.path, ring, shipped_seq=None, keep_local_days=0, retention=1,
                          now=datetime.now(UTC) + timedelta(days=3))
    assert removed > 0
    assert orjson.loads(pruned_path(log.path).read_bytes())["reason"] == "retention"
    result = verify([log.path], ring)
    assert result.ok and "retention, older than" in result.notes[0], result.render()


async def test_a_forged_or_removed_marker_is_found(tmp_path: Path, ring: KeyRing) -> None:
    log = await rotated_log(tmp_path / "decisions.log", ring)
    prune_local(log.path, ring, shipped_seq=log.seq, keep_local_days=0, retention=400)
    marker = orjson.loads(pruned_path(log.path).read_bytes())
    pruned_path(log.path).write_bytes(orjson.dumps({**marker, "through_seq": marker["through_seq"] + 5}))
    bad = verify([log.path], ring)
    assert (bad.ok, bad.problem) == (False, "marker_invalid")
    other = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    assert prune_local(log.path, other, shipped_seq=log.seq, keep_local_days=0, retention=400) == 0  # refuses
    pruned_path(log.path).unlink()
    assert verify([log.path], ring).problem == "seq_gap"


async def test_an_interrupted_removal_verifies(tmp_path: Path, ring: KeyRing) -> None:
    """The marker is written first: a crash before the unlink leaves a segment the marker covers."""
    log = await rotated_log(tmp_path / "decisions.log", ring)
    first = segments(log.path)[0][1]
    keep = first.read_bytes()
    prune_local(log.path, ring, shipped_seq=orjson.loads(keep.splitlines()[-1])["seq"], keep_local_days=0,
                retention=400)
    first.write_bytes(keep)  # as if the unlink never happened
    result = verify([log.path], ring)
    assert result.ok, result.render()
