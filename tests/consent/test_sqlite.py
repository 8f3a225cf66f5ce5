from __future__ import annotations

import sqlite3
import stat
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, ConsentEvent, ConsentStore, Status, SubjectHasher
from veil.errors import ConsentUnavailable

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ev(subject: str, key: str, action: Action, at: datetime, **kw: object) -> ConsentEvent:
    return ConsentEvent(subject=subject, consent_key=key, action=action, at=at, **kw)  # type: ignore[arg-type]


async def test_record_current_history(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        assert isinstance(store, ConsentStore)
        exp = T0 + timedelta(days=365)
        await store.record([
            ev("alice", "personalization", Action.GIVEN, T0, notice_version=3, expires_at=exp,
               source="web", method="banner", jurisdiction="EU", purposes=("recs", "email")),
            ev("bob", "personalization", Action.GIVEN, T0),
        ])
        await store.record([ev("bob", "personalization", Action.WITHDRAWN, T0 + timedelta(hours=1))])
        got = await store.current(["alice", "bob", "carol"], ["personalization", "marketing"])
        assert set(got) == {("alice", "personalization"), ("bob", "personalization")}
        alice = got[("alice", "personalization")]
        assert alice.status is Status.GIVEN and alice.expires_at == exp and alice.notice_version == 3
        assert alice.source == "web" and alice.at == T0
        assert alice.is_given(T0) and not alice.is_given(exp + timedelta(seconds=1))
        assert got[("bob", "personalization")].status is Status.WITHDRAWN

        history = await store.history("bob")
        assert [e.action for e in history] == [Action.GIVEN, Action.WITHDRAWN]
        assert all(e.subject == hasher("bob") for e in history)
        proof = await store.proof("alice")
        assert proof[0].event.purposes == ("recs", "email") and proof[0].event.jurisdiction == "EU"
        assert proof[0].recorded_at.tzinfo is not None
        uuid.UUID(proof[0].event.event_id or "")
    finally:
        await store.close()


async def test_latest_event_wins_even_out_of_order(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        await store.record([ev("s", "k", Action.WITHDRAWN, T0 + timedelta(days=2))])
        await store.record([ev("s", "k", Action.GIVEN, T0)])  # older, recorded later (an import)
        got = await store.current(["s"], ["k"])
        assert got[("s", "k")].status is Status.WITHDRAWN
        assert [e.at for e in await store.history("s")] == [T0, T0 + timedelta(days=2)]
    finally:
        await store.close()


async def test_event_id_is_idempotent(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        eid = str(uuid.uuid4())
        await store.record([ev("s", "k", Action.GIVEN, T0, event_id=eid)])
        await store.record([ev("s", "k", Action.GIVEN, T0, event_id=eid)])
        assert len(await store.history("s")) == 1
    finally:
        await store.close()


async def test_batch_lookup_of_thousands(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        subjects = [f"user-{i}" for i in range(3000)]
        await store.record([ev(s, "k", Action.GIVEN, T0) for s in subjects[::2]])
        got = await store.current(subjects, ["k", "other"])
        assert len(got) == 1500
        assert all(got[(s, "k")].status is Status.GIVEN for s in subjects[::2])
    finally:
        await store.close()


async def test_no_subject_id_in_clear_at_rest(tmp_path: Path, hasher: SubjectHasher) -> None:
    path = tmp_path / "c.db"
    store = SqliteConsentStore(path, hasher)
    ids = [f"alice.{i}@example.com" for i in range(50)] + ["+4915112345678", "CUST-0000987654"]
    try:
        await store.record([ev(s, "personalization", Action.GIVEN, T0) for s in ids])
        await store.current(ids, ["personalization"])
        files = [p for p in tmp_path.iterdir() if p.name.startswith("c.db")]
        assert any(p.name.endswith("-wal") for p in files)
        blob = b"".join(p.read_bytes() for p in files)
        assert hasher(ids[0]).encode() in blob  # the rows are there, hashed
        for s in ids:
            assert s.encode() not in blob
            assert s.encode("utf-16-le") not in blob
    finally:
        await store.close()


async def test_file_and_directory_are_owner_only(tmp_path: Path, hasher: SubjectHasher) -> None:
    path = tmp_path / "new" / "deeper" / "c.db"
    store = SqliteConsentStore(path, hasher)
    try:
        await store.record([ev("s", "k", Action.GIVEN, T0)])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
        wal = path.with_name("c.db-wal")
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        await store.close()


async def test_locked_database_is_unavailable(tmp_path: Path, hasher: SubjectHasher) -> None:
    path = tmp_path / "c.db"
    store = SqliteConsentStore(path, hasher, busy_timeout=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        assert await store.ping()
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ConsentUnavailable, match="locked"):
            await store.record([ev("s", "k", Action.GIVEN, T0)])
        other.execute("ROLLBACK")
        await store.record([ev("s", "k", Action.GIVEN, T0)])
        assert (await store.current(["s"], ["k"]))[("s", "k")].status is Status.GIVEN
    finally:
        other.close()
        await store.close()


async def test_unreadable_database_is_unavailable(tmp_path: Path, hasher: SubjectHasher) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"this is not a database file, just some bytes" * 100)
    store = SqliteConsentStore(path, hasher)
    try:
        assert await store.ping() is False
        with pytest.raises(ConsentUnavailable) as info:
            await store.current(["s"], ["k"])
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert "s" not in info.value.message.split()
    finally:
        await store.close()


async def test_directory_not_writable_is_unavailable(tmp_path: Path, hasher: SubjectHasher) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SqliteConsentStore(blocker / "c.db", hasher)  # parent is a file
    try:
        assert await store.ping() is False
        with pytest.raises(ConsentUnavailable):
            await store.record([ev("s", "k", Action.GIVEN, T0)])
    finally:
        await store.close()


async def test_closed_store_is_unavailable(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    await store.close()
    await store.close()
    with pytest.raises(ConsentUnavailable):
        await store.current(["s"], ["k"])
    assert await store.ping() is False


async def test_empty_inputs(tmp_path: Path, hasher: SubjectHasher) -> None:
    store = SqliteConsentStore(tmp_path / "c.db", hasher)
    try:
        assert await store.current([], ["k"]) == {}
        await store.record([])
        assert await store.history("nobody") == []
    finally:
        await store.close()


async def test_a_file_replaced_on_disk_is_reopened(tmp_path: Path) -> None:
    """A restore by rename must not leave veil answering from the deleted file."""
    from veil.keys import KeyRing

    hasher = SubjectHasher(KeyRing.single(b"s" * 32))
    live, restored = tmp_path / "consent.db", tmp_path / "restored.db"
    other = SqliteConsentStore(restored, hasher)
    await other.record([ConsentEvent("c-1", "ads", Action.GIVEN, datetime.now(UTC))])
    await other.close()
    store = SqliteConsentStore(live, hasher)
    before = await store.current(["c-1"], ["ads"])
    assert ("c-1", "ads") not in before or before[("c-1", "ads")].status is Status.MISSING
    for suffix in ("", "-wal", "-shm"):
        Path(str(live) + suffix).unlink(missing_ok=True)
    restored.rename(live)
    got = await store.current(["c-1"], ["ads"])
    assert got[("c-1", "ads")].status is Status.GIVEN
    await store.close()
