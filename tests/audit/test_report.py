from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from veil.audit import AuditLog, pseudonym, pseudonyms, report
from veil.keys import KeyRing, generate_key, keyed_hash


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.single(bytes.fromhex(generate_key()), "k1")


@pytest.fixture
def pring() -> KeyRing:
    return KeyRing.single(bytes.fromhex(generate_key()), "p1")


def rec(subject: str | None, decision: str, caller: str, purpose: str, cats: list[str], time: Any,
        **extra: Any) -> dict[str, Any]:
    out = {"id": f"{caller}-{time}", "time": time, "caller": caller, "purpose": purpose,
           "route": "GET /c/{id}", "decision": decision, "reason": "ok", "categories": cats, **extra}
    if subject is not None:
        out["subject"] = subject
    return out


async def write(path: Path, ring: KeyRing, records: list[dict[str, Any]]) -> None:
    log = AuditLog(path, ring, flush_interval=0)
    await log.start()
    for r in records:
        await log.append(r)
    await log.close()


def test_pseudonym_is_the_keyed_subject_hash(pring: KeyRing) -> None:
    p = pseudonym(pring, "customer-42")
    assert p == keyed_hash(pring.current, "customer-42", context="veil-subject")
    assert p != pseudonym(pring, "customer-43") and "customer-42" not in p
    rotated = KeyRing("p2", {"p2": bytes.fromhex(generate_key()), "p1": pring.current})
    assert pseudonyms(rotated, "customer-42") == {p, pseudonym(rotated, "customer-42")}


async def test_report_lists_disclosures_only(tmp_path: Path, ring: KeyRing, pring: KeyRing) -> None:
    me, other = pseudonym(pring, "alice"), pseudonym(pring, "bob")
    await write(tmp_path / "decisions.log", ring, [
        rec(me, "allow", "storefront", "personalize.recs", ["profile"], "2025-01-02T10:00:00Z"),
        rec(me, "redact", "storefront", "personalize.recs", ["contact.email"], "2025-01-03T10:00:00Z"),
        rec(me, "block", "adtech", "ads.targeting", ["profile"], "2025-01-04T10:00:00Z"),
        rec(other, "allow", "crm", "support", ["contact.email"], "2025-01-05T10:00:00Z"),
        rec(other, "filter", "crm", "support.lists", ["contact.phone"], "2025-01-06T10:00:00Z",
            subjects=[other, me]),
        rec(None, "allow", "crm", "support.lists", ["x"], "2025-01-07T10:00:00Z", subjects=[other]),
        {"kind": "admin", "action": "consent.withdraw", "subject": me, "decision": "allow",
         "time": "2025-01-08T10:00:00Z"},
    ])
    rep = report([tmp_path], ring, me)
    assert rep.verification.ok
    assert [(d.caller, d.purpose, d.decision) for d in rep.disclosures] == [
        ("storefront", "personalize.recs", "allow"),
        ("storefront", "personalize.recs", "redact"),
        ("crm", "support.lists", "filter"),
    ]
    recips = {(r.caller, r.purpose): r for r in rep.recipients}
    assert set(recips) == {("storefront", "personalize.recs"), ("crm", "support.lists")}
    sf = recips[("storefront", "personalize.recs")]
    assert (sf.categories, sf.count, sf.first, sf.last) == (
        ("contact.email", "profile"), 2, "2025-01-02T10:00:00Z", "2025-01-03T10:00:00Z")
    data = rep.to_dict()
    assert data["verified"] is True and data["subjects"] == [me] and len(data["disclosures"]) == 3


async def test_report_across_chains_in_time_order(tmp_path: Path, ring: KeyRing, pring: KeyRing) -> None:
    me = pseudonym(pring, "alice")
    await write(tmp_path / "decisions.log", ring, [rec(me, "allow", "b", "p", [], 1735700000)])
    log = AuditLog(tmp_path / "decisions.log", ring, chain_id="w2", flush_interval=0)
    await log.start()
    await log.append(rec(me, "allowed", "a", "p", [], 1735600000))
    await log.close()
    rep = report([tmp_path], ring, [me])
    assert [d.caller for d in rep.disclosures] == ["a", "b"]
    assert rep.disclosures[0].time == "2024-12-30T23:06:40.000Z"


async def test_report_on_a_tampered_log_says_so(tmp_path: Path, ring: KeyRing, pring: KeyRing) -> None:
    me = pseudonym(pring, "alice")
    await write(tmp_path / "decisions.log", ring, [
        rec(me, "allow", "a", "p", [], f"2025-01-0{i}T00:00:00Z") for i in range(1, 6)
    ])
    lines = (tmp_path / "decisions.log").read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"caller":"a"', b'"caller":"z"')
    (tmp_path / "decisions.log").write_bytes(b"".join(lines))
    rep = report([tmp_path], ring, me)
    assert not rep.verification.ok and rep.verification.problem == "mac_mismatch"
    assert len(rep.disclosures) == 2  # the records before the first bad line
