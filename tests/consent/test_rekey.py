"""Rotation of the consent-store key: lookups under every ring key, lazy re-key, `veil consent rekey`.

Each store test runs on a real SQLite file and on a real PostgreSQL schema (skipped when the server is
unreachable, failing under CI=true: see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.consent.conftest import PG_URL
from veil.cli import main
from veil.consent import _schema_pg, _schema_sqlite
from veil.consent.cache import CachedConsentStore
from veil.consent.open import StoreImpl, open_raw_store
from veil.consent.postgres import PostgresConsentStore
from veil.consent.sqlite import SqliteConsentStore
from veil.consent.store import Action, ConsentEvent, Status, SubjectHasher
from veil.keys import KeyRing, write_private_file

K0, K1, K2 = b"\x10" * 32, b"\x11" * 32, b"\x12" * 32
SECRETS = {"k0": K0, "k1": K1, "k2": K2}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ALICE, BOB = "alice@example.com", "+4915112345678"


def hasher(*ids: str) -> SubjectHasher:
    """A hasher over the ring `ids` (the first is current)."""
    return SubjectHasher(KeyRing(ids[0], {k: SECRETS[k] for k in ids}))


def ev(subject: str, action: Action = Action.GIVEN, at: datetime = T0, key: str = "p") -> ConsentEvent:
    return ConsentEvent(subject=subject, consent_key=key, action=action, at=at)


@dataclass
class Backend:
    name: str
    url: str
    schema: str | None
    path: Path | None

    async def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of a table, read from outside the store."""
        if self.path is not None:
            conn = sqlite3.connect(self.path)
            conn.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
            finally:
                conn.close()
        pg = await asyncpg.connect(PG_URL)
        try:
            return [dict(r) for r in await pg.fetch(f'SELECT * FROM "{self.schema}".{table}')]
        finally:
            await pg.close()

    async def dump(self) -> bytes:
        """Everything the store holds on disk (SQLite: the file and its WAL) or in its tables (PostgreSQL)."""
        if self.path is not None:
            return b"".join(p.read_bytes() for p in self.path.parent.iterdir() if p.name.startswith("c.db"))
        pg = await asyncpg.connect(PG_URL)
        try:
            text = ""
            for table in ("consent_events", "consent_current", "veil_import_progress"):
                rows = await pg.fetch(f'SELECT t::text FROM "{self.schema}".{table} t')
                text += "\n".join(r[0] for r in rows)
            return text.encode()
        finally:
            await pg.close()


Opener = Callable[[SubjectHasher], Awaitable[StoreImpl]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "data" / "c.db"
        return Backend("sqlite", f"sqlite:///{path}", None, path)
    schema = request.getfixturevalue("pg_schema")
    return Backend("postgres", f"{PG_URL}?schema={schema}", schema, None)


@pytest.fixture
async def open_store(backend: Backend) -> AsyncIterator[Opener]:
    """Factory: open the backend's store with a given hasher (PostgreSQL: migrated, not listening)."""
    opened: list[StoreImpl] = []

    async def make(h: SubjectHasher) -> StoreImpl:
        store = await open_raw_store(backend.url, h, listen=False)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def test_old_key_consent_is_found_and_rekeyed(backend: Backend, open_store: Opener) -> None:
    old = await open_store(hasher("k1"))
    await old.record([ev(ALICE), ev(ALICE, key="q"), ev(BOB)])
    k1_alice = hasher("k1")(ALICE)

    store = await open_store(hasher("k2", "k1"))
    got = await store.current([ALICE, "carol"], ["p"])
    assert set(got) == {(ALICE, "p")} and got[(ALICE, "p")].status is Status.GIVEN
    assert store.rekeyed == 1

    k2_alice = hasher("k2")(ALICE)
    events, current = await backend.rows("consent_events"), await backend.rows("consent_current")
    assert not [r for r in events + current if r["subject_hash"] == k1_alice]
    mine = [r for r in events + current if r["subject_hash"] == k2_alice]
    assert len(mine) == 4 and {r["key_id"] for r in mine} == {"k2"}  # both keys' rows moved, events too
    assert {r["key_id"] for r in events + current if r["subject_hash"] == hasher("k1")(BOB)} == {"k1"}

    again = await store.current([ALICE], ["p", "q"])  # now a direct hit under the current key
    assert {s.status for s in again.values()} == {Status.GIVEN} and len(again) == 2
    assert store.rekeyed == 1
    history = await store.history(ALICE)
    assert [e.consent_key for e in history] == ["p", "q"] and {e.subject for e in history} == {k2_alice}


async def test_history_reads_under_every_key(open_store: Opener) -> None:
    old = await open_store(hasher("k1"))
    await old.record([ev(BOB)])
    store = await open_store(hasher("k2", "k1"))
    await store.record([ev(BOB, Action.WITHDRAWN, T0 + timedelta(hours=1))])
    history = await store.history(BOB)  # nothing re-keyed yet: one event per key
    assert [e.action for e in history] == [Action.GIVEN, Action.WITHDRAWN]
    assert [e.subject for e in history] == [hasher("k1")(BOB), hasher("k2")(BOB)]


async def test_withdrawal_under_the_new_key_wins(backend: Backend, open_store: Opener) -> None:
    old = await open_store(hasher("k1"))
    await old.record([ev(ALICE), ev(BOB, Action.WITHDRAWN)])
    store = await open_store(hasher("k2", "k1"))
    # Written before any lookup re-keyed the old rows: both hashes hold a current row for "p".
    await store.record([
        ev(ALICE, Action.WITHDRAWN, T0 + timedelta(minutes=5)),
        ev(BOB, Action.GIVEN, T0 - timedelta(days=1)),  # older than bob's withdrawal, arrives late
    ])
    got = await store.current([ALICE, BOB], ["p"])
    assert got[(ALICE, "p")].status is Status.WITHDRAWN
    assert got[(BOB, "p")].status is Status.WITHDRAWN  # the newer `at` wins, whichever key wrote it
    current = await backend.rows("consent_current")
    assert sorted((r["subject_hash"], r["action"], r["key_id"]) for r in current) == sorted([
        (hasher("k2")(ALICE), "withdrawn", "k2"), (hasher("k2")(BOB), "withdrawn", "k2"),
    ])
    assert len(await backend.rows("consent_events")) == 4
    assert (await store.current([ALICE, BOB], ["p"])) == got


async def test_old_key_removed_before_rekey_fails_closed(open_store: Opener) -> None:
    old = await open_store(hasher("k1"))
    await old.record([ev(ALICE)])
    store = await open_store(hasher("k2"))
    assert await store.current([ALICE], ["p"]) == {}
    assert await store.history(ALICE) == []
    assert store.rekeyed == 0


async def test_sqlite_busy_file_defers_the_rekey_not_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    old = SqliteConsentStore(path, hasher("k1"))
    store = SqliteConsentStore(path, hasher("k2", "k1"))
    other = sqlite3.connect(path, isolation_level=None)  # another process holding the write lock
    try:
        await old.record([ev(ALICE)])
        assert await store.ping()  # connected (and migrated) before the lock is taken
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert (await store.current([ALICE], ["p"]))[(ALICE, "p")].status is Status.GIVEN
        assert time.monotonic() - started < 1.0 and store.rekeyed == 0  # the lock wait is short
        other.execute("ROLLBACK")
        assert (await store.current([ALICE], ["p"]))[(ALICE, "p")].status is Status.GIVEN
        assert store.rekeyed == 1
    finally:
        other.close()
        await old.close()
        await store.close()


async def test_three_keys_merge_into_the_current_one(backend: Backend, open_store: Opener) -> None:
    await (await open_store(hasher("k0"))).record([ev(ALICE, at=T0)])
    middle = await open_store(hasher("k1", "k0"))
    await middle.record([ev(ALICE, Action.WITHDRAWN, T0 + timedelta(hours=1))])
    store = await open_store(hasher("k2", "k1", "k0"))
    got = await store.current([ALICE], ["p"])
    assert got[(ALICE, "p")].status is Status.WITHDRAWN and store.rekeyed == 2
    current = await backend.rows("consent_current")
    assert [(r["subject_hash"], r["action"], r["key_id"]) for r in current] == [
        (hasher("k2")(ALICE), "withdrawn", "k2")
    ]


async def test_batch_lookup_rekeys_all_at_once(backend: Backend, open_store: Opener) -> None:
    subjects = [f"customer-{i:05d}" for i in range(600)]
    await (await open_store(hasher("k1"))).record([ev(s) for s in subjects[::2]])
    store = await open_store(hasher("k2", "k1"))
    got = await store.current(subjects, ["p"])
    assert set(got) == {(s, "p") for s in subjects[::2]}
    assert store.rekeyed == 300
    assert {r["key_id"] for r in await backend.rows("consent_current")} == {"k2"}
    assert len(await store.current(subjects, ["p"])) == 300 and store.rekeyed == 300


async def test_rekey_notifies_other_replicas(pg_url: str) -> None:
    writer = await PostgresConsentStore.connect(pg_url, hasher("k1"), listen=False)
    await writer.migrate()
    reader = await PostgresConsentStore.connect(pg_url, hasher("k2", "k1"), listen=False)
    other = await PostgresConsentStore.connect(pg_url, hasher("k2", "k1"), listen=True)
    try:
        seen: list[str] = []
        other.on_change(seen.append)
        await writer.record([ev(ALICE)])
        await asyncio.sleep(0.1)
        seen.clear()
        assert (await reader.current([ALICE], ["p"]))[(ALICE, "p")].status is Status.GIVEN
        want = {hasher("k1")(ALICE), hasher("k2")(ALICE)}
        for _ in range(100):
            if want <= set(seen):
                break
            await asyncio.sleep(0.02)
        assert want <= set(seen)
    finally:
        for s in (writer, reader, other):
            await s.close()


async def test_cache_invalidates_by_any_ring_hash(tmp_path: Path) -> None:
    h = hasher("k2", "k1")
    cache = CachedConsentStore(SqliteConsentStore(tmp_path / "c.db", h), ttl=60, maxsize=100)
    try:
        await cache.current([ALICE, BOB], ["p"])
        assert len(cache) == 2
        cache.invalidate(hasher("k1")(ALICE))  # a replica still writing under k1 notifies this
        assert len(cache) == 1
        cache.invalidate(hasher("k2")(BOB))
        assert len(cache) == 0
    finally:
        await cache.close()


async def test_sqlite_v1_file_is_migrated_and_its_rows_count_as_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_schema_sqlite.MIGRATIONS[0][1])
        conn.execute("CREATE TABLE veil_schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER)")
        conn.execute("INSERT INTO veil_schema_version VALUES (1, 0)")
        h = hasher("k1")(ALICE)
        conn.execute(
            "INSERT INTO consent_events (event_id, subject_hash, consent_key, action, at, source, method, "
            "recorded_at) VALUES ('0b6f8a0e-2e43-4d39-9d7e-a3c1f35b5f59', ?, 'p', 'given', 1, 'x', 'y', 1)",
            (h,),
        )
        conn.execute("INSERT INTO consent_current VALUES (?, 'p', 'given', 1, NULL, NULL, 'x', 1)", (h,))
        conn.commit()
    finally:
        conn.close()
    store = SqliteConsentStore(path, hasher("k1"))
    try:
        assert (await store.current([ALICE], ["p"]))[(ALICE, "p")].status is Status.GIVEN
        counts = await store.key_counts()
        assert counts.events == {None: 1} and counts.current == {None: 1}
        done = await store.rekey([ALICE, BOB])
        assert (done.events, done.current, done.labelled) == (0, 0, 2)
        counts = await store.key_counts()
        assert counts.events == {"k1": 1} and counts.current == {"k1": 1}
    finally:
        await store.close()


async def test_postgres_v1_schema_is_migrated_to_the_latest(pg_url: str, pg_schema: str) -> None:
    pg = await asyncpg.connect(PG_URL)
    try:
        s = f'"{pg_schema}"'
        await pg.execute(f"CREATE SCHEMA {s}")
        await pg.execute(_schema_pg.VERSION_TABLE.replace("{s}", s))
        await pg.execute(_schema_pg.MIGRATIONS[0][1].replace("{s}", s))
        await pg.execute(f"INSERT INTO {s}.veil_schema_version (version) VALUES (1)")
    finally:
        await pg.close()
    stores = [await PostgresConsentStore.connect(pg_url, hasher("k1"), listen=False) for _ in range(3)]
    try:
        latest = max(v for v, _ in _schema_pg.MIGRATIONS)
        assert set(await asyncio.gather(*(st.migrate() for st in stores))) == {latest}
        await stores[0].record([ev(ALICE)])
        assert (await stores[0].key_counts()).events == {"k1": 1}
    finally:
        for st in stores:
            await st.close()


# -- the CLI ---------------------------------------------------------------------------------------------


def _config(tmp_path: Path, url: str, ids: tuple[str, ...]) -> str:
    keys = tmp_path / "keys"
    for kid in ids:
        write_private_file(keys / f"{kid}.key", SECRETS[kid].hex())
    ring = "\n".join(f"    - {{id: {k}, secret: 'file:{keys / (k + '.key')}'}}" for k in ids)
    path = tmp_path / f"veil-{'-'.join(ids)}.yaml"
    path.write_text(
        "upstreams: {app: {url: 'http://127.0.0.1:9'}}\n"
        f"consent: {{url: '{url}'}}\n"
        f"keys:\n  store:\n{ring}\n"
    )
    return str(path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["consent", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def acli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`cli` from an async test (the command runs its own event loop, so on a thread)."""
    return await asyncio.to_thread(cli, capsys, *argv)


async def test_cli_rekey_ids_and_status(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_cfg, new_cfg = _config(tmp_path, backend.url, ("k1",)), _config(tmp_path, backend.url, ("k2", "k1"))
    subjects = [ALICE, BOB, "ünïcode-id", "c-00042"]
    for s in subjects:
        assert (await acli(capsys, "grant", "--config", old_cfg, "--subject", s, "--key", "p"))[0] == 0

    code, out, _ = await acli(capsys, "rekey", "--config", new_cfg, "--status")
    assert code == 1 and "k2 (current), k1" in out and "8 row(s) are not under the current key k2" in out
    code, out, _ = await acli(capsys, "rekey", "--config", new_cfg, "--status", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["current_key"] == "k2" and doc["rows_under_other_keys"] == 8
    assert doc["keys"] == [{"key_id": "k1", "events": 4, "current": 4, "in_ring": True}]

    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join([*subjects[:3], "", "never-seen"]) + "\r\n", encoding="utf-8")
    code, out, err = await acli(capsys, "rekey", "--config", new_cfg, "--ids", str(ids), "--batch-size", "2")
    assert code == 0, err
    assert "re-keyed 3 event row(s) and 3 current row(s) of 4 listed subject(s) to key k2" in out
    assert err.count("subject(s):") == 2  # progress: one line per batch
    assert "2 row(s) are not under the current key k2" in out

    code, out, _ = await acli(capsys, "rekey", "--config", new_cfg, "--ids", str(ids))
    assert code == 0 and "re-keyed 0 event row(s)" in out  # idempotent

    ids.write_text("c-00042\n")
    assert (await acli(capsys, "rekey", "--config", new_cfg, "--ids", str(ids), "--quiet"))[0] == 0
    code, out, _ = await acli(capsys, "rekey", "--config", new_cfg, "--status")
    assert code == 0 and "every row is under the current key k2: k1 can be removed from keys.store" in out

    k2_only = _config(tmp_path, backend.url, ("k2",))
    code, out, _ = await acli(capsys, "show", "--config", k2_only, "--subject", BOB, "--json")
    assert code == 0 and json.loads(out)["consent"][0]["status"] == "given"

    dump = await backend.dump()
    assert dump and not any(s.encode() in dump for s in [*subjects, "never-seen"])
    assert not any(s in out + err for s in subjects)


def test_cli_rekey_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    code, _, err = cli(capsys, "rekey", "--store", url, "--ids", str(tmp_path / "ids.txt"))
    assert code == 2 and "--config" in err
    code, out, _ = cli(capsys, "rekey", "--store", url, "--status")  # no key needed to count
    assert code == 0 and "the store is empty" in out
    cfg = _config(tmp_path, url, ("k2", "k1"))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"alice\n\xff\xfe\n")
    code, _, err = cli(capsys, "rekey", "--config", cfg, "--ids", str(bad))
    assert code == 1 and "not UTF-8" in err and "alice" not in err
    code, _, err = cli(capsys, "rekey", "--config", cfg, "--ids", str(tmp_path / "missing.txt"))
    assert code == 1 and "cannot read" in err
