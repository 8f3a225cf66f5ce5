from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from veil.consent._schema_pg import MIGRATIONS
from veil.consent.cache import CachedConsentStore
from veil.consent.postgres import PostgresConsentStore
from veil.consent.store import Action, ConsentEvent, ConsentStore, Status, SubjectHasher
from veil.errors import ConsentUnavailable

LATEST = max(v for v, _ in MIGRATIONS)

pytestmark = pytest.mark.postgres
PgFactory = Callable[..., Awaitable[PostgresConsentStore]]
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ev(
    subject: str, action: Action = Action.GIVEN, at: datetime = T0, key: str = "k", **kw: object
) -> ConsentEvent:
    return ConsentEvent(subject=subject, consent_key=key, action=action, at=at, **kw)  # type: ignore[arg-type]


async def wait_for(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_concurrent_migrations_are_safe(pg_store: PgFactory, pg_schema: str, pg_admin_url: str) -> None:
    stores = [await pg_store(listen=False, migrate=False) for _ in range(4)]
    versions = await asyncio.gather(*(s.migrate() for s in stores))
    assert set(versions) == {LATEST}
    conn = await asyncpg.connect(pg_admin_url)
    try:
        rows = await conn.fetch(f'SELECT version FROM "{pg_schema}".veil_schema_version')
    finally:
        await conn.close()
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))
    assert await stores[0].migrate() == LATEST


async def test_unmigrated_schema_is_unavailable(pg_store: PgFactory) -> None:
    store = await pg_store(listen=False, migrate=False)
    with pytest.raises(ConsentUnavailable, match="migrate"):
        await store.current(["a"], ["k"])


async def test_record_current_history(pg_store: PgFactory, hasher: SubjectHasher) -> None:
    store = await pg_store(listen=False)
    assert isinstance(store, ConsentStore)
    exp = T0 + timedelta(days=30)
    await store.record([
        ev("alice", notice_version=2, expires_at=exp, source="web", method="banner", jurisdiction="EU",
           purposes=("recs",)),
        ev("bob"),
    ])
    await store.record([ev("bob", Action.WITHDRAWN, T0 + timedelta(hours=1))])
    await store.record([ev("bob", Action.GIVEN, T0 - timedelta(days=1))])  # older, arrives late
    got = await store.current(["alice", "bob", "carol"], ["k", "other"])
    assert set(got) == {("alice", "k"), ("bob", "k")}
    assert got[("alice", "k")].status is Status.GIVEN and got[("alice", "k")].expires_at == exp
    assert got[("bob", "k")].status is Status.WITHDRAWN
    history = await store.history("bob")
    assert [e.at for e in history] == [T0 - timedelta(days=1), T0, T0 + timedelta(hours=1)]
    assert {e.subject for e in history} == {hasher("bob")}
    proof = await store.proof("alice")
    assert proof[0].event.purposes == ("recs",) and proof[0].event.method == "banner"
    assert proof[0].recorded_at >= proof[0].event.at


async def test_batch_of_thousands_in_one_query(pg_store: PgFactory) -> None:
    store = await pg_store(listen=False)
    subjects = [f"user-{i}" for i in range(5000)]
    await store.record([ev(s) for s in subjects[::5]])
    got = await store.current(subjects, ["k"])
    assert len(got) == 1000


async def test_no_subject_id_in_clear(pg_store: PgFactory, pg_schema: str, pg_admin_url: str) -> None:
    store = await pg_store(listen=False)
    ids = ["alice@example.com", "+4915112345678"]
    await store.record([ev(s) for s in ids])
    conn = await asyncpg.connect(pg_admin_url)
    try:
        dump = ""
        for table in ("consent_events", "consent_current"):
            rows = await conn.fetch(f'SELECT t::text FROM "{pg_schema}".{table} t')
            dump += "\n".join(r[0] for r in rows)
    finally:
        await conn.close()
    assert dump
    assert not any(s in dump for s in ids)


async def test_notify_invalidates_other_replicas_cache(pg_store: PgFactory, hasher: SubjectHasher) -> None:
    writer = await pg_store(listen=False)
    reader = await pg_store(listen=True)
    assert reader.listening
    seen: list[str] = []
    reader.on_change(seen.append)
    cache = CachedConsentStore(reader, ttl=3600, maxsize=100)
    await writer.record([ev("alice")])
    assert (await cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.GIVEN
    await wait_for(lambda: hasher("alice") in seen)  # the grant's own notification
    await writer.record([ev("alice", Action.WITHDRAWN, T0 + timedelta(minutes=1))])
    await wait_for(lambda: seen.count(hasher("alice")) == 2)
    assert (await cache.current(["alice"], ["k"]))[("alice", "k")].status is Status.WITHDRAWN


async def test_unreachable_server(hasher: SubjectHasher) -> None:
    with pytest.raises(ConsentUnavailable, match="unreachable"):
        await PostgresConsentStore.connect("postgresql://postgres@127.0.0.1:1/test", hasher, timeout=2)


async def test_closed_store(pg_store: PgFactory) -> None:
    store = await pg_store(listen=True)
    await store.close()
    assert await store.ping() is False
    with pytest.raises(ConsentUnavailable):
        await store.current(["a"], ["k"])
