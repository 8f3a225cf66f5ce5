"""The per-subject report from the store: the same rows as the file-based report (one `disclosure_of`),
found through the subject index, each record checked before it is listed."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson
import pytest

from tests.audit.conftest import SQL
from tests.audit.test_ship import ship_all
from veil.audit import AuditLog, pseudonym, report
from veil.audit.ship import Shipper, StoreLink
from veil.audit.store import AuditStore
from veil.audit.store_report import store_report
from veil.keys import KeyRing, generate_key

pytestmark = pytest.mark.postgres


@pytest.fixture
def pring() -> KeyRing:
    return KeyRing.single(bytes.fromhex(generate_key()), "p1")


def rec(subject: str | None, decision: str, caller: str, purpose: str, disclosed: dict[str, list[str]] | None,
        time: str, **extra: object) -> dict[str, object]:
    """A decision record as veil writes it: what left (`disclosed`, by category and form), `released`."""
    out: dict[str, object] = {"id": f"{caller}-{time}", "time": time, "caller": caller, "purpose": purpose,
                              "route": "GET /c/{id}", "decision": decision, "reason": "ok",
                              "released": disclosed is not None, **extra}
    if disclosed is not None:
        out["disclosed"] = disclosed
    if subject is not None:
        out["subject"] = subject
    return out


async def test_the_store_report_equals_the_file_report(tmp_path: Path, ring: KeyRing, pring: KeyRing,
                                                       store: AuditStore, store_url: str, sql: SQL) -> None:
    me, other = pseudonym(pring, "alice"), pseudonym(pring, "bob")
    records = [
        rec(me, "allow", "storefront", "personalize.recs", {"profile": ["clear"]}, "2026-01-02T10:00:00Z"),
        rec(me, "redact", "storefront", "personalize.recs", {"contact.email": ["hash"], "profile": ["clear"]},
            "2026-01-03T10:00:00Z"),
        rec(me, "block", "adtech", "ads.targeting", None, "2026-01-04T10:00:00Z"),
        rec(other, "allow", "crm", "support", {"contact.email": ["clear"]}, "2026-01-05T10:00:00Z"),
        rec(None, "filter", "crm", "support.lists", {"contact.phone": ["clear"]}, "2026-01-06T10:00:00Z",
            subjects=[other, me]),
        {"kind": "admin", "action": "consent.read", "subject": me, "time": "2026-01-08T10:00:00Z"},
    ]
    for replica, part in (("r1", records[:3]), ("r2", records[3:])):
        log = AuditLog(tmp_path / replica / "decisions.log", ring, flush_interval=0)
        await log.start()
        for r in part:
            await log.append(r)
        await log.close()
        link = StoreLink(store_url, timeout=10, partition="month")
        s = Shipper(link, log.path, ring, replica=replica, chain_id="main")
        await ship_all(s)
        s.close()
        await link.close()
    from_files = report([tmp_path / "r1", tmp_path / "r2"], ring, me)
    from_store = await store_report(store, ring, {me})
    assert from_store.verification.ok, from_store.verification.render()
    assert from_store.disclosures == from_files.disclosures
    assert [(d.caller, d.decision) for d in from_store.disclosures] == [
        ("storefront", "allow"), ("storefront", "redact"), ("crm", "filter")]
    assert from_store.disclosures[1].categories == {"contact.email": ("hash",), "profile": ("clear",)}
    assert from_store.recipients == from_files.recipients
    assert from_store.verification.records == 5  # the subject's records: 4 decisions (1 a block), 1 admin
    assert "checks whole chains" in from_store.verification.render()

    # the index is used (not a scan of the table)
    conn = await asyncpg.connect(store_url.split("?")[0])
    try:
        await conn.execute(f'SET search_path = "{store.schema}"')
        await conn.execute("SET enable_seqscan = off")  # a tiny table: the planner would scan it otherwise
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT line FROM audit_records WHERE subjects && $1::text[]", [me]))
    finally:
        await conn.close()
    assert "audit_records_subjects" in plan or "subjects_idx" in plan, plan

    # a modified record is not listed, and the report says the store did not verify
    line = await sql.line("r1", 3)
    r1 = await sql.chain_no("r1")
    await sql("UPDATE {s}.audit_records SET line = $2 WHERE chain_no = $1 AND seq = 3", r1,
              line.replace('"contact.email"', '"health"'))
    tampered = await store_report(store, ring, {me})
    assert not tampered.verification.ok and tampered.verification.problem == "mac_mismatch"
    assert [d.decision for d in tampered.disclosures] == ["allow", "filter"]  # the modified one is left out
    # the record before one of the subject's removed: its link cannot be checked, and the report says so
    await sql("UPDATE {s}.audit_records SET line = $2 WHERE chain_no = $1 AND seq = 3", r1, line)
    assert orjson.loads(await sql.line("r1", 2))["subject"] == me
    await sql("DELETE FROM {s}.audit_records WHERE chain_no = $1 AND seq = 2", r1)
    gap = await store_report(store, ring, {me})
    assert (gap.verification.problem, gap.verification.first_bad) == ("seq_gap", ("r1/main", 3))
