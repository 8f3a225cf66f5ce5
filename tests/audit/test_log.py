from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from veil import metrics
from veil.audit import AuditLog, AuditRecordInvalid, verify
from veil.errors import AuditWriteError
from veil.keys import KeyRing, generate_key


@pytest.fixture(params=["always", "interval", "never"])
def mode(request: pytest.FixtureRequest) -> str:
    """The fsync modes: every one writes a record before its append returns."""
    return str(request.param)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.single(bytes.fromhex(generate_key()), "k1")


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def decision(i: int) -> dict[str, Any]:
    return {"id": f"d{i}", "time": "2025-01-01T00:00:00Z", "caller": "storefront", "decision": "allow",
            "subject": "p" * 32, "fields": {"removed": ["a.b"], "transformed": [], "dropped": []}}


def metric(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name)
    return value if value is not None else 0.0


async def test_records_are_chained_and_maced(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    log = AuditLog(tmp_path / "audit" / "decisions.log", ring, fsync=mode)
    await log.start()
    for i in range(3):
        await log.append(decision(i))
    await log.close()

    recs = lines_of(log.path)
    assert [r.get("kind") for r in recs] == ["start", None, None, None, "checkpoint"]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    prev = ""
    for r in recs:
        assert r["prev"] == prev and r["kid"] == "k1"
        body = orjson.dumps({k: v for k, v in r.items() if k != "mac"}, option=orjson.OPT_SORT_KEYS)
        assert r["mac"] == hmac.new(ring.current, body, hashlib.sha256).hexdigest()
        prev = r["mac"]
    assert recs[1]["fields"] == {"removed": ["a.b"], "transformed": [], "dropped": []}
    assert recs[-1]["reason"] == "close" and recs[-1]["count"] == 4 and recs[-1]["head"] == recs[-2]["mac"]
    head = orjson.loads(log.head_file.read_bytes())
    assert (head["seq"], head["mac"]) == (5, recs[-1]["mac"])
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.head_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700


async def test_concurrent_appends_are_batched_and_all_land(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    before = metric("veil_audit_records_total")
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=5, fsync=mode)
    await log.start()
    await asyncio.gather(*(log.append(decision(i)) for i in range(200)))
    await log.close()
    ids = [r["id"] for r in lines_of(log.path) if "id" in r]
    assert sorted(ids) == sorted(f"d{i}" for i in range(200))
    assert metric("veil_audit_records_total") - before == 200
    assert verify([log.path], ring).ok


async def test_flush_interval_zero_writes_immediately(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0, fsync=mode)
    await log.start()
    await log.append(decision(1))
    assert lines_of(log.path)[-1]["id"] == "d1"  # on disk when append returns
    await log.close()


async def test_periodic_checkpoints(tmp_path: Path, ring: KeyRing) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, checkpoint_every=3, flush_interval=0)
    await log.start()
    for i in range(7):
        await log.append(decision(i))
    await log.close()
    kinds = [r.get("kind", "-") for r in lines_of(log.path)]
    assert kinds == ["start", "-", "-", "-", "checkpoint", "-", "-", "-", "checkpoint", "-", "checkpoint"]


async def test_restart_continues_the_chain(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    path = tmp_path / "decisions.log"
    for run in range(2):
        log = AuditLog(path, ring, fsync=mode)
        await log.start()
        await log.append(decision(run))
        await log.close()
    recs = lines_of(path)
    starts = [r for r in recs if r.get("kind") == "start"]
    assert [s["resumed_from"] for s in starts] == [0, 3]
    assert verify([path], ring).ok


async def test_restart_after_a_torn_write_cuts_it_off(tmp_path: Path, ring: KeyRing) -> None:
    path = tmp_path / "decisions.log"
    log = AuditLog(path, ring)
    await log.start()
    await log.append(decision(1))
    await log.close()
    with open(path, "ab") as f:
        f.write(b'{"caller":"storefront","decis')  # a crash in the middle of a write
    log = AuditLog(path, ring)
    await log.start()
    await log.append(decision(2))
    await log.close()
    start = [r for r in lines_of(path) if r.get("kind") == "start"][-1]
    assert start["discarded_bytes"] == 29
    assert verify([path], ring).ok


async def test_rotation_continues_the_chain_in_numbered_files(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, max_bytes=1500, flush_interval=0, fsync=mode)
    await log.start()
    for i in range(20):
        await log.append(decision(i))
    await log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "decisions.log.1" in names and "decisions.log.2" in names and "decisions.log.head" in names
    first_of_2 = lines_of(tmp_path / "decisions.log.2")[0]
    last_of_1 = lines_of(tmp_path / "decisions.log.1")[-1]
    assert last_of_1["kind"] == "checkpoint" and last_of_1["reason"] == "rotate"
    assert first_of_2["prev"] == last_of_1["mac"]
    result = verify([tmp_path], ring)
    assert result.ok and result.files == len([n for n in names if not n.endswith(".head")])


async def test_one_chain_per_worker_in_one_directory(tmp_path: Path, ring: KeyRing) -> None:
    logs = [AuditLog(tmp_path / "decisions.log", ring, chain_id=c) for c in ("main", "w1", "w2")]
    for log in logs:
        await log.start()
    await asyncio.gather(*(log.append(decision(i)) for i, log in enumerate(logs)))
    for log in logs:
        await log.close()
    assert [log.path.name for log in logs] == ["decisions.log", "decisions-w1.log", "decisions-w2.log"]
    result = verify([tmp_path], ring)
    assert result.ok and result.chains == 3 and result.files == 3
    with pytest.raises(Exception, match="chain id"):
        AuditLog(tmp_path / "decisions.log", ring, chain_id="../x")


async def test_bad_records_are_refused_without_harming_the_batch(tmp_path: Path, ring: KeyRing) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=5)
    await log.start()
    with pytest.raises(AuditRecordInvalid):
        await log.append({"seq": 3})
    with pytest.raises(AuditRecordInvalid):
        await log.append({"kind": "checkpoint"})
    results = await asyncio.gather(
        log.append(decision(1)), log.append({"bad": {1, 2}}), log.append(decision(2)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None and isinstance(results[1], AuditRecordInvalid)
    await log.close()
    assert verify([log.path], ring).ok
    assert [r["id"] for r in lines_of(log.path) if "id" in r] == ["d1", "d2"]


async def test_append_outside_start_and_close_fails(tmp_path: Path, ring: KeyRing) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring)
    with pytest.raises(AuditWriteError):
        await log.append(decision(1))
    await log.start()
    await log.close()
    await log.close()  # idempotent
    with pytest.raises(AuditWriteError):
        await log.append(decision(1))


async def test_disk_full_fails_closed_and_recovers(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    path = tmp_path / "decisions.log"
    log = AuditLog(path, ring, flush_interval=0, fsync=mode)
    await log.start()
    await log.append(decision(1))
    assert log.healthy and metric("veil_audit_up") == 1
    errors = metric("veil_audit_write_errors_total")

    os.rename(path, tmp_path / "aside")
    os.symlink("/dev/full", path)  # every write now fails with ENOSPC
    with pytest.raises(AuditWriteError) as info:
        await log.append(decision(2))
    assert info.value.code == "audit_unavailable"
    assert not log.healthy and metric("veil_audit_up") == 0
    assert metric("veil_audit_write_errors_total") > errors
    with pytest.raises(AuditWriteError):
        await log.append(decision(3))

    os.unlink(path)
    os.rename(tmp_path / "aside", path)  # space again
    await log.append(decision(4))
    assert log.healthy and metric("veil_audit_up") == 1
    await log.close()
    assert [r["id"] for r in lines_of(path) if "id" in r] == ["d1", "d4"]
    assert verify([path], ring).ok  # failed records left no gap in the chain


async def test_missing_directory_fails_until_it_is_back(tmp_path: Path, ring: KeyRing, mode: str) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory / "decisions.log", ring, flush_interval=0, fsync=mode)
    await log.start()
    shutil.rmtree(directory)
    with pytest.raises(AuditWriteError):
        await log.append(decision(1))
    assert not log.healthy
    directory.mkdir()
    await log.append(decision(2))
    assert log.healthy
    await log.close()
    assert [r["id"] for r in lines_of(log.path) if "id" in r] == ["d2"]
    result = verify([directory], ring)
    assert not result.ok and result.problem == "seq_gap"  # the lost records stay visible


async def test_start_fails_when_the_directory_cannot_be_made(tmp_path: Path, ring: KeyRing) -> None:
    (tmp_path / "file").write_text("x")
    log = AuditLog(tmp_path / "file" / "decisions.log", ring)
    with pytest.raises(AuditWriteError):
        await log.start()
    assert not log.healthy


async def test_key_rotation_writes_with_the_current_key(tmp_path: Path) -> None:
    k1, k2 = bytes.fromhex(generate_key()), bytes.fromhex(generate_key())
    path = tmp_path / "decisions.log"
    for ring in (KeyRing("k1", {"k1": k1}), KeyRing("k2", {"k2": k2, "k1": k1})):
        log = AuditLog(path, ring)
        await log.start()
        await log.append(decision(1))
        await log.close()
    assert {r["kid"] for r in lines_of(path)} == {"k1", "k2"}
    assert verify([path], KeyRing("k2", {"k2": k2, "k1": k1})).ok
    only_new = verify([path], KeyRing("k2", {"k2": k2}))
    assert (only_new.problem, only_new.first_bad) == ("unknown_key", (path, 1))


async def test_interval_mode_syncs_in_the_background_and_moves_the_head(tmp_path: Path, ring: KeyRing) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, fsync="interval", fsync_interval=20, flush_interval=0)
    await log.start()
    for i in range(5):
        await log.append(decision(i))
    assert lines_of(log.path)[-1]["id"] == "d4"  # written when append returns
    deadline = asyncio.get_running_loop().time() + 5
    while orjson.loads(log.head_file.read_bytes())["seq"] != log.seq:
        assert asyncio.get_running_loop().time() < deadline, "the head did not follow the background sync"
        await asyncio.sleep(0.02)
    head = orjson.loads(log.head_file.read_bytes())
    assert head["mac"] == lines_of(log.path)[-1]["mac"]
    await log.close()
    assert verify([log.path], ring).ok


def test_fsync_modes_are_checked(tmp_path: Path, ring: KeyRing) -> None:
    assert AuditLog(tmp_path / "a.log", ring, fsync=True).fsync_mode == "always"
    assert AuditLog(tmp_path / "a.log", ring, fsync=False).fsync_mode == "never"
    with pytest.raises(Exception, match="fsync"):
        AuditLog(tmp_path / "a.log", ring, fsync="sometimes")


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
async def test_the_head_catches_up_after_the_last_write_of_a_burst(tmp_path: Path, mode: str) -> None:
    """A sidecar shipper ships what the head file says: after a burst the head must reach the last
    record without waiting for the next write."""
    from veil.audit._chain import read_head
    from veil.audit.log import HEAD_SYNC_INTERVAL

    ring = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0, fsync=mode, fsync_interval=20)
    await log.start()
    for i in range(20):
        await log.append({"id": f"d{i}"})
    for _ in range(int(HEAD_SYNC_INTERVAL * 40) + 40):
        head = read_head(log.head_file)
        if head and head["seq"] == log.seq:
            break
        await asyncio.sleep(0.05)
    head = read_head(log.head_file)
    assert head is not None and head["seq"] == log.seq == 21
    await log.close()


async def test_held_refuse_raises_and_writes_nothing(tmp_path: Path) -> None:
    from veil.errors import AuditBacklogFull

    ring = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0)
    await log.start()
    await log.append({"id": "a"})
    log.hold("refuse")
    with pytest.raises(AuditBacklogFull) as err:
        await log.append({"id": "b"})
    assert err.value.code == "audit_backlog_full"
    log.release()
    await log.append({"id": "c"})
    await log.close()
    ids = [orjson.loads(line).get("id") for line in log.path.read_bytes().splitlines()]
    assert ids == [None, "a", "c", None]  # start, a, c, the closing checkpoint: nothing about b


async def test_held_serve_counts_and_the_chain_says_how_many(tmp_path: Path) -> None:
    from veil.audit import verify

    ring = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0)
    await log.start()
    log.hold("serve")
    for i in range(7):
        await log.append({"id": f"u{i}"})  # returns: served, not recorded
    log.release()
    await log.append({"id": "after"})
    log.hold("serve")
    await log.append({"id": "lost-at-close"})
    await log.close()  # the count of a hold still on at close is written too
    recs = [orjson.loads(line) for line in log.path.read_bytes().splitlines()]
    unrecorded = [r for r in recs if r.get("kind") == "unrecorded"]
    assert [(r["count"], r["reason"]) for r in unrecorded] == [(7, "backlog_full"), (1, "backlog_full")]
    assert unrecorded[0]["since"] <= unrecorded[0]["until"]
    assert not any(str(r.get("id", "")).startswith("u") for r in recs)
    result = verify([log.path], ring)
    assert result.ok and result.notes == ("decisions.log: 8 decisions were not recorded (backlog over its bound)",)
    with pytest.raises(Exception, match="reserved"):
        log2 = AuditLog(tmp_path / "x.log", ring, flush_interval=0)
        await log2.start()
        try:
            await log2.append({"kind": "unrecorded", "count": 1})  # callers cannot forge one
        finally:
            await log2.close()


async def test_the_writer_holds_itself_after_the_batch_that_crosses_the_bound(tmp_path: Path) -> None:
    ring = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0)
    await log.start()
    held = []
    log.on_hold = lambda: held.append(log.seq)
    log.bound(measured=1000, limit=3000, mode="refuse")
    n = 0
    from veil.errors import AuditBacklogFull

    with pytest.raises(AuditBacklogFull):
        for n in range(100):
            await log.append({"id": f"d{n}", "pad": "x" * 100})
    size = sum(len(line) + 1 for line in log.path.read_bytes().splitlines()[1:])  # after the start record
    assert held == [log.seq] and 1000 + size >= 3000 and 1000 + size - 200 < 3000  # one record over, at most
    assert log.held == "refuse"
    await log.close()


async def test_rotate_on_demand(tmp_path: Path) -> None:
    from veil.audit import verify
    from veil.audit._chain import segments

    ring = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0, fsync="always")
    await log.start()
    await log.append({"id": "a"})
    assert await log.rotate() is True
    assert [n for n, _ in segments(log.path)] == [1] and log.path.stat().st_size == 0
    assert await log.rotate() is True  # nothing to rotate: no new segment
    assert len(segments(log.path)) == 1
    await log.append({"id": "b"})
    await log.close()
    assert verify([log.path], ring).ok
