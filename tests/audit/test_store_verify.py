"""`verify_store`: every chain in the store checked with the chain rules of the files, per replica; each
kind of tampering found (modified, removed, inserted, reordered, truncated); retention's signed
markers understood; chains of replicas that are gone stay verifiable."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.audit.conftest import SQL, decision
from tests.audit.test_ship import ship_all
from veil.audit import AuditLog
from veil.audit.ship import Shipper, StoreLink
from veil.audit.store import AuditStore
from veil.audit.store_verify import StoreVerifyResult, verify_store
from veil.keys import KeyRing, generate_key

pytestmark = pytest.mark.postgres

JAN, MAR = "2025-01-15T10:00:00.000+00:00", "2025-03-15T10:00:00.000+00:00"


async def ship_replica(tmp: Path, url: str, ring: KeyRing, replica: str, times: list[str]) -> None:
    """A replica whose clock reads `times` (its own start and close records too)."""
    clock = {"t": times[0].replace("+00:00", "Z")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("veil.audit.log.now_iso", lambda: clock["t"])
        log = AuditLog(tmp / replica / "decisions.log", ring, flush_interval=0)
        await log.start()
        for i, t in enumerate(times):
            clock["t"] = t.replace("+00:00", "Z")
            await log.append(decision(i, time=t))
        await log.close()
    link = StoreLink(url, timeout=10, partition="month")
    shipper = Shipper(link, log.path, ring, replica=replica, chain_id="main", batch_records=7)
    await ship_all(shipper)
    shipper.close()
    await link.close()


@pytest.fixture
async def fleet(tmp_path: Path, ring: KeyRing, store: AuditStore, store_url: str) -> AsyncIterator[AuditStore]:
    """Two replicas' chains in the store: r1 with 20 decisions, r2 with 10."""
    await ship_replica(tmp_path, store_url, ring, "r1", [MAR] * 20)
    await ship_replica(tmp_path, store_url, ring, "r2", [MAR] * 10)
    yield store


def failed(result: StoreVerifyResult) -> list[tuple[str, str | None, int | None]]:
    return [(c.replica, c.problem, c.at_seq) for c in result.chains if not c.ok]


async def test_an_untouched_store_verifies_per_replica(fleet: AuditStore, ring: KeyRing) -> None:
    result = await verify_store(fleet, ring, page=5)  # small pages: lookahead across page boundaries
    assert result.ok, result.render()
    assert [(c.replica, c.records, c.first_seq, c.last_seq, c.status) for c in result.chains] == [
        ("r1", 22, 1, 22, "closed"), ("r2", 12, 1, 12, "closed")]
    text = result.render()
    assert text.splitlines()[0].startswith("ok      r1/main (#1): 22 records (seq 1..22), closed, last shipped ")
    assert text.splitlines()[-1] == "ok: 34 records in 2 chains from 2 replicas"
    assert result.to_dict()["chains"][1]["replica"] == "r2"


async def test_modified_record(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    line = await sql.line("r1", 6)
    await sql("UPDATE {s}.audit_records SET line = $1 WHERE chain_no = $2 AND seq = 6",
              line.replace('"allow"', '"block"'), await sql.chain_no("r1"))
    result = await verify_store(fleet, ring)
    assert failed(result) == [("r1", "mac_mismatch", 6)]
    assert result.chains[1].ok and not result.ok
    assert "FAILED  r1/main (#1) at seq 6: mac_mismatch" in result.render()


async def test_removed_record(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    await sql("DELETE FROM {s}.audit_records WHERE chain_no = $1 AND seq = 9", await sql.chain_no("r2"))
    result = await verify_store(fleet, ring)
    assert failed(result) == [("r2", "seq_gap", 10)]
    assert "record 9 is missing before seq 10" in result.chains[1].message


async def test_inserted_record(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    """r2's record 5 (a valid MAC under the same key) spliced into r1's chain after its record 4."""
    r1 = await sql.chain_no("r1")
    await sql("UPDATE {s}.audit_records SET seq = -seq - 1 WHERE chain_no = $1 AND seq >= 5", r1)
    await sql("UPDATE {s}.audit_records SET seq = -seq WHERE chain_no = $1 AND seq < 0", r1)
    foreign = await sql.line("r2", 5)
    await sql("INSERT INTO {s}.audit_records (chain_no, seq, at, kind, subjects, line) "
              "SELECT chain_no, 5, at, kind, subjects, $2 FROM {s}.audit_records WHERE chain_no = $1 AND seq = 4",
              r1, foreign)
    result = await verify_store(fleet, ring)
    assert failed(result) == [("r1", "chain_break", 5)]


async def test_inserted_duplicate_row(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    """A second row with an existing seq (another partition time): found as a repeat."""
    r1 = await sql.chain_no("r1")
    await sql("INSERT INTO {s}.audit_records (chain_no, seq, at, kind, subjects, line) "
              "SELECT chain_no, seq, at + interval '1 second', kind, subjects, line FROM {s}.audit_records "
              "WHERE chain_no = $1 AND seq = 7", r1)
    result = await verify_store(fleet, ring)
    assert failed(result) == [("r1", "seq_repeat", 7)]


async def test_reordered_records(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    r1 = await sql.chain_no("r1")
    a, b = await sql.line("r1", 11), await sql.line("r1", 12)
    await sql("UPDATE {s}.audit_records SET line = $2 WHERE chain_no = $1 AND seq = 11", r1, b)
    await sql("UPDATE {s}.audit_records SET line = $2 WHERE chain_no = $1 AND seq = 12", r1, a)
    result = await verify_store(fleet, ring)
    assert failed(result) == [("r1", "reordered", 11)]


async def test_truncated_chain(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    await sql("DELETE FROM {s}.audit_records WHERE chain_no = $1 AND seq > 9", await sql.chain_no("r2"))
    result = await verify_store(fleet, ring)
    assert failed(result) == [("r2", "truncated", 10)]
    assert "the ship head says seq 12, the log ends at 9" in result.chains[1].message


async def test_truncated_chain_with_its_head_moved_back(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    """Cutting the tail and editing the chain's row to match: the signed head disagrees."""
    r2 = await sql.chain_no("r2")
    await sql("DELETE FROM {s}.audit_records WHERE chain_no = $1 AND seq > 9", r2)
    mac = orjson.loads(await sql.line("r2", 9))["mac"]
    await sql("UPDATE {s}.audit_chains SET shipped_seq = 9, shipped_mac = $2 WHERE chain_no = $1", r2, mac)
    assert failed(await verify_store(fleet, ring)) == [("r2", "head_invalid", 9)]
    forged = {"kind": "shipped", "genesis": "x", "seq": 9, "head_mac": mac, "kid": "k1", "mac": "0" * 64}
    await sql("UPDATE {s}.audit_chains SET head = $2 WHERE chain_no = $1", r2, orjson.dumps(forged).decode())
    assert failed(await verify_store(fleet, ring)) == [("r2", "head_invalid", 9)]


async def test_a_whole_chain_deleted_leaves_its_row(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    await sql("DELETE FROM {s}.audit_records WHERE chain_no = $1", await sql.chain_no("r2"))
    assert failed(await verify_store(fleet, ring)) == [("r2", "truncated", 1)]


async def test_rows_of_no_known_chain(fleet: AuditStore, ring: KeyRing, sql: SQL) -> None:
    await sql("INSERT INTO {s}.audit_records (chain_no, seq, at, kind, line) VALUES (99, 1, '2025-03-15', 'x', '{}')")
    result = await verify_store(fleet, ring)
    assert not result.ok and result.problems == ["orphan_rows: 1 rows of chain #99, which the store does not know"]


async def test_wrong_key(fleet: AuditStore) -> None:
    other = KeyRing.single(bytes.fromhex(generate_key()), "k1")
    assert failed(await verify_store(fleet, other)) == [("r1", "head_invalid", 22), ("r2", "head_invalid", 12)]


async def test_chains_of_replicas_that_are_gone_stay_verifiable(tmp_path: Path, fleet: AuditStore,
                                                                ring: KeyRing) -> None:
    shutil.rmtree(tmp_path / "r1")  # the pod and its emptyDir are gone
    shutil.rmtree(tmp_path / "r2")
    result = await verify_store(fleet, ring)
    assert result.ok and [c.status for c in result.chains] == ["closed", "closed"]


async def test_retention_drops_partitions_and_leaves_signed_markers(tmp_path: Path, ring: KeyRing,
                                                                    store: AuditStore, store_url: str,
                                                                    sql: SQL) -> None:
    """r1 spans January and March: dropping January removes a prefix of its chain; r2 lived in
    January only: its whole chain goes, and its row and markers remain."""
    await ship_replica(tmp_path, store_url, ring, "r1", [JAN] * 5 + [MAR] * 5)
    await ship_replica(tmp_path, store_url, ring, "r2", [JAN] * 3)
    assert [p[0] for p in await store.partitions()][:1] == ["audit_records_20250101"]
    markers = await store.prune(datetime(2025, 2, 10, tzinfo=UTC), ring)
    assert [(m["through_seq"], m["records"], m["reason"], m["before"]) for m in markers] == [
        (6, 6, "retention", "2025-02-01T00:00:00Z"), (5, 5, "retention", "2025-02-01T00:00:00Z")]
    assert [p[0] for p in await store.partitions()] == ["audit_records_20250201", "audit_records_20250301"]
    result = await verify_store(store, ring)
    assert result.ok, result.render()
    r1, r2 = result.chains
    assert (r1.records, r1.first_seq, r1.last_seq) == (6, 7, 12)
    assert r1.notes == ("pruned: 6 records up to seq 6 removed (retention, older than 2025-02-01T00:00:00Z, "
                        f"at {markers[0]['at']})",)
    assert (r2.records, r2.status) == (0, "open")
    assert await store.prune(datetime(2025, 2, 10, tzinfo=UTC), ring) == []  # nothing more to drop

    # a forged marker (moved forward without the key) hides records: found
    r1no = await sql.chain_no("r1")
    row = await sql("SELECT marker FROM {s}.audit_pruned WHERE chain_no = $1", r1no)
    forged = {**orjson.loads(row[0]["marker"]), "through_seq": 8}
    await sql("UPDATE {s}.audit_pruned SET through_seq = 8, marker = $2 WHERE chain_no = $1", r1no,
              orjson.dumps(forged).decode())
    assert failed(await verify_store(store, ring)) == [("r1", "marker_invalid", 8)]
    await sql("DELETE FROM {s}.audit_pruned WHERE chain_no = $1", r1no)  # the marker removed
    assert failed(await verify_store(store, ring)) == [("r1", "seq_gap", 7)]
