"""Shipping a local decision log to the store (real PostgreSQL): complete, in order, idempotent,
resuming from what the store has, following rotation, one chain per genesis."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.audit.conftest import decision, write_log
from veil.audit import AuditLog
from veil.audit._chain import cursor_path
from veil.audit.ship import Shipper, StoreLink, chains_to_ship
from veil.audit.store import AuditStore
from veil.audit.store_verify import verify_store
from veil.keys import KeyRing

pytestmark = pytest.mark.postgres


async def rows(url: str, schema: str) -> list[Any]:
    conn = await asyncpg.connect(url.split("?")[0])
    try:
        return list(await conn.fetch(f'SELECT c.chain, c.replica, r.seq, r.kind, r.subjects, r.line, r.at '
                                     f'FROM "{schema}".audit_records r JOIN "{schema}".audit_chains c USING (chain_no) '
                                     f'ORDER BY r.chain_no, r.seq'))
    finally:
        await conn.close()


async def ship_all(shipper: Shipper) -> int:
    total = 0
    while n := await shipper.step():
        total += n
    return total


def make(store_url: str, path: Path, ring: KeyRing, *, replica: str = "r1", chain_id: str = "main",
         **kw: Any) -> Shipper:
    return Shipper(StoreLink(store_url, timeout=10, partition="month"), path, ring, replica=replica,
                   chain_id=chain_id, **kw)


async def test_ships_a_log_completely_and_in_order(tmp_path: Path, ring: KeyRing, store_url: str,
                                                   pg_schema: str) -> None:
    log = await write_log(tmp_path / "decisions.log", ring, 250)
    shipper = make(store_url, log.path, ring, batch_records=100)
    assert await ship_all(shipper) == 252  # start, 250 decisions, the closing checkpoint
    got = await rows(store_url, pg_schema)
    assert [r["seq"] for r in got] == list(range(1, 253))
    assert [r["line"].encode() + b"\n" for r in got] == log.path.read_bytes().splitlines(keepends=True)
    assert got[1]["subjects"] == ["a" * 32] and got[1]["kind"] == "decision" and got[0]["kind"] == "start"
    assert all(a["at"] <= b["at"] for a, b in itertools.pairwise(got))
    assert {r["replica"] for r in got} == {"r1"}
    result = await verify_store(await shipper.link.get(), ring)
    assert result.ok, result.render()
    assert [(c.records, c.status) for c in result.chains] == [(252, "closed")]
    shipper.close()  # (the cursor follows at most every second while shipping; closing writes it)
    cursor = orjson.loads(cursor_path(log.path).read_bytes())
    assert cursor["seq"] == 252 and cursor["offset"] == log.path.stat().st_size
    await shipper.link.close()


async def test_a_restart_resumes_from_the_store_without_duplicates(tmp_path: Path, ring: KeyRing,
                                                                   store_url: str, pg_schema: str) -> None:
    path = tmp_path / "decisions.log"
    await write_log(path, ring, 40)
    first = make(store_url, path, ring, batch_records=10)
    assert await first.step() == 10  # one batch, then "crash"
    first.reader.close()
    cursor_path(path).unlink(missing_ok=True)  # even without its cursor file
    await write_log(path, ring, 30, start=40)  # veil restarts and writes more
    second = make(store_url, path, ring, batch_records=1000)
    assert await ship_all(second) == 42 + 32 - 10
    got = await rows(store_url, pg_schema)
    assert [r["seq"] for r in got] == list(range(1, 75))
    assert (await verify_store(await second.link.get(), ring)).ok
    for s in (first, second):
        s.close()
        await s.link.close()


async def test_follows_rotation_while_the_writer_writes(tmp_path: Path, ring: KeyRing, store_url: str,
                                                        pg_schema: str) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0, max_bytes=4000, fsync="interval",
                   fsync_interval=10)
    await log.start()
    shipper = make(store_url, log.path, ring, durable=lambda: log.durable_seq, batch_records=7)
    task = asyncio.create_task(shipper.run())
    for i in range(300):
        await log.append(decision(i))
        if i % 37 == 0:
            await asyncio.sleep(0.01)
    await log.close()
    assert len(list(tmp_path.glob("decisions.log.*[0-9]"))) > 5  # it rotated many times
    for _ in range(200):
        if shipper.shipped_seq == log.seq:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    got = await rows(store_url, pg_schema)
    assert [r["seq"] for r in got] == list(range(1, log.seq + 1))
    result = await verify_store(await shipper.link.get(), ring)
    assert result.ok and result.chains[0].status == "closed", result.render()
    shipper.close()
    await shipper.link.close()


async def test_two_shippers_of_one_chain_never_duplicate(tmp_path: Path, ring: KeyRing, store_url: str,
                                                         pg_schema: str) -> None:
    path = tmp_path / "decisions.log"
    await write_log(path, ring, 500)
    a, b = make(store_url, path, ring, batch_records=13), make(store_url, path, ring, batch_records=17)
    ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
    for _ in range(300):
        if a.shipped_seq == b.shipped_seq == 502:
            break
        await asyncio.sleep(0.05)
    ta.cancel()
    tb.cancel()
    assert [r["seq"] for r in await rows(store_url, pg_schema)] == list(range(1, 503))
    for s in (a, b):
        s.close()
        await s.link.close()


async def test_a_new_log_under_the_same_name_is_a_new_chain(tmp_path: Path, ring: KeyRing, store_url: str,
                                                            pg_schema: str) -> None:
    """A StatefulSet pod that lost its emptyDir (same replica name, fresh log): never mixed with the old."""
    path = tmp_path / "decisions.log"
    await write_log(path, ring, 5)
    s1 = make(store_url, path, ring)
    await ship_all(s1)
    s1.close()
    for f in tmp_path.iterdir():
        f.unlink()
    await write_log(path, ring, 3)
    s2 = make(store_url, path, ring)
    assert await ship_all(s2) == 5
    store = await s2.link.get()
    chains = await store.chains()
    assert [(c.replica, c.chain, c.shipped_seq) for c in chains] == [("r1", "main", 7), ("r1", "main", 5)]
    assert chains[0].genesis != chains[1].genesis
    assert (await verify_store(store, ring)).ok
    for s in (s1, s2):
        await s.link.close()
    s2.close()


async def test_only_what_the_writer_made_durable_is_shipped(tmp_path: Path, ring: KeyRing, store_url: str,
                                                            pg_schema: str) -> None:
    log = AuditLog(tmp_path / "decisions.log", ring, flush_interval=0, fsync="interval", fsync_interval=60_000)
    await log.start()
    for i in range(10):
        await log.append(decision(i))
    shipper = make(store_url, log.path, ring, durable=lambda: log.durable_seq, written=lambda: log.seq)
    assert await ship_all(shipper) == 1  # the start record (synced at start); the rest waits for a sync
    assert shipper.lag_records == 10
    await log.close()
    assert await ship_all(shipper) == 11
    shipper.close()
    await shipper.link.close()


async def test_a_sidecar_ships_every_chain_of_the_directory(tmp_path: Path, ring: KeyRing, store_url: str,
                                                            pg_schema: str) -> None:
    path = tmp_path / "audit" / "decisions.log"
    for chain_id in ("w0", "w1"):
        await write_log(path, ring, 4, chain_id=chain_id)
    found = chains_to_ship(path)
    assert [c for c, _ in found] == ["w0", "w1"]
    link = StoreLink(store_url, timeout=10, partition="week")
    shippers = [Shipper(link, active, ring, replica="pod-7", chain_id=c) for c, active in found]
    for s in shippers:
        assert await ship_all(s) == 6  # durable: what the head file says
        s.close()
    store = await link.get()
    assert store.width == "week"
    assert [(c.replica, c.chain) for c in await store.chains()] == [("pod-7", "w0"), ("pod-7", "w1")]
    await link.close()


async def test_the_partition_width_is_fixed_when_the_store_is_created(store: AuditStore) -> None:
    assert await store.migrate("day") == "month"
