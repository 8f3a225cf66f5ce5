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
    """A decision record as the proxy writes it: `cats` left in clear when the decision let data out."""
    released = decision in ("allow", "redact", "filter", "allowed")
    out = {"id": f"{caller}-{time}", "time": time, "caller": caller, "purpose": purpose,
           "route": "GET /c/{id}", "decision": decision, "reason": "ok" if released else "consent_missing",
           "released": released, "disclosed": {c: ["clear"] for c in cats} if released else {}, **extra}
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
        {"contact.email": ("clear",), "profile": ("clear",)}, 2, "2025-01-02T10:00:00Z", "2025-01-03T10:00:00Z")
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


async def test_report_reads_what_left_by_form_and_per_subject(tmp_path: Path, ring: KeyRing, pring: KeyRing
                                                              ) -> None:
    """Categories come from `disclosed` (what the response contained, with its form), per subject on a
    list response whose items differ; a report-only pass-through counts even when it would have blocked."""
    me, other = pseudonym(pring, "alice"), pseudonym(pring, "bob")
    await write(tmp_path / "decisions.log", ring, [
        {"id": "1", "time": "2025-01-01T00:00:00Z", "caller": "shop", "purpose": "recs", "route": "/c/{id}",
         "decision": "redact", "reason": "ok", "subject": me, "released": True,
         "disclosed": {"contact.email": ["hash"], "identity": ["clear"]}},
        {"id": "2", "time": "2025-01-02T00:00:00Z", "caller": "shop", "purpose": "recs", "route": "/c",
         "decision": "filter", "reason": "ok", "subjects": [other, me, me], "released": True,
         "disclosed": {"identity": ["clear"], "health": ["clear"]},
         "disclosed_by_subject": {"sets": [{"identity": ["clear"], "health": ["clear"]},
                                           {"identity": ["clear"]}], "of": [0, 1, 1]}},
        {"id": "3", "time": "2025-01-03T00:00:00Z", "caller": "ads", "purpose": "ads", "route": "/c/{id}",
         "decision": "block", "reason": "consent_withdrawn", "subject": me, "released": True,
         "mode": "report-only", "disclosed": None},
        {"id": "4", "time": "2025-01-04T00:00:00Z", "caller": "ads", "purpose": "ads", "route": "/c/{id}",
         "decision": "block", "reason": "consent_withdrawn", "subject": me, "released": False, "disclosed": {}},
        # written before disclosures were recorded: `categories` named what a rule acted on
        {"id": "5", "time": "2025-01-05T00:00:00Z", "caller": "old", "purpose": "recs", "route": "/c/{id}",
         "decision": "allow", "reason": "ok", "subject": me, "categories": ["health"]},
    ])
    rep = report([tmp_path], ring, me)
    assert [d.id for d in rep.disclosures] == ["1", "2", "3", "5"]
    by_id = {d.id: d for d in rep.disclosures}
    assert by_id["1"].categories == {"contact.email": ("hash",), "identity": ("clear",)}
    assert by_id["2"].categories == {"identity": ("clear",)}  # bob's item held health, not alice's
    assert by_id["3"].report_only and not by_id["3"].known
    assert not by_id["5"].known and by_id["5"].categories == {}
    recips = {(r.caller, r.purpose): r for r in rep.recipients}
    assert recips[("shop", "recs")].categories == {"contact.email": ("hash",), "identity": ("clear",)}
    assert recips[("ads", "ads")].unknown == 1
    theirs = report([tmp_path], ring, other)
    assert theirs.disclosures[0].categories == {"health": ("clear",), "identity": ("clear",)}
