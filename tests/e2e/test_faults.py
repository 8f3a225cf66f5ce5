"""Faults under a running veil: the decision log cannot be written, the consent store cannot be read or
written. Each fails closed with its reason (503, no data), /readyz and the metrics tell, and veil
recovers by itself when the fault ends. (Upstream 5xx: test_hardening.py; a policy file replaced by
garbage: test_reload.py.)"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Veil
from tests.e2e.test_reasons import assert_problem, write_consent
from veil.audit import verify
from veil.config import load_config

REC = "personalize.recommendations"
ADS = "advertising.targeted"
SHIP = "orders.fulfillment"


def gauge(v: Veil, name: str) -> float:
    for family in text_string_to_metric_families(v.metrics()):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not in the scrape")


def ready(v: Veil) -> tuple[int, str, list[str]]:
    """/readyz without a token: the HTTP status, the status word and the reason codes."""
    r = v.client.get(f"{v.admin}/readyz")
    return r.status_code, r.json()["status"], r.json()["reasons"]


def wait_for(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - t0


def post_consent(v: Veil, subject: str, key: str, **extra: object) -> httpx.Response:
    return v.client.post(f"{v.admin}/consent/{subject}", json={"key": key, "action": "given", **extra},
                         headers={"Authorization": f"Bearer {v.tokens['consent']}"})


# ------------------------------------------------------------------ decision log
def break_log(audit: Path, fault: str) -> Callable[[], None]:
    """Make the decision log unwritable; returns the repair. veil runs as root in tests: chmod would
    not stop it, so the file becomes /dev/full (ENOSPC) or the directory becomes a plain file."""
    active, aside = audit / "decisions.log", audit.with_name("audit.aside")
    if fault == "disk_full":
        os.rename(active, aside)
        os.symlink("/dev/full", active)
    else:
        os.rename(audit, aside)
        audit.write_text("not a directory")

    def repair() -> None:
        if fault == "disk_full":
            os.unlink(active)
            os.rename(aside, active)
        else:
            audit.unlink()
            os.rename(aside, audit)

    return repair


def test_decision_log_down_fails_closed_and_recovers(veil_factory: Callable[..., Veil]) -> None:
    v = veil_factory("audit")
    audit = v.dir / "audit"
    v.consent("c-000300", "personalization", notice_version=3)
    assert v.get("/customers/c-000300", purpose=REC).status_code == 200
    assert ready(v) == (200, "ready", [])
    refused: list[str] = []
    served: list[str] = []
    for fault in ("disk_full", "directory_gone"):
        repair = break_log(audit, fault)
        r = v.get("/customers/c-000300", purpose=REC)
        assert_problem(r, 503, "audit_unavailable", "c-000300")
        assert "ps_" not in r.text
        refused.append(r.headers["veil-decision-id"])
        ship = v.get("/customers/c-000300", caller="warehouse", purpose=SHIP)  # contract basis: same
        assert_problem(ship, 503, "audit_unavailable")
        # a block discloses nothing: it is still answered with its own reason while the log is down
        assert_problem(v.get("/customers/c-000301", purpose=REC), 403, "consent_missing")
        assert ready(v) == (503, "not_ready", ["audit_unavailable"]), fault
        assert gauge(v, "veil_audit_up") == 0

        repair()
        ok = v.get("/customers/c-000300", purpose=REC)
        assert ok.status_code == 200 and ok.json()["id"] == "c-000300", (fault, ok.text)
        served.append(ok.headers["veil-decision-id"])
        assert ready(v) == (200, "ready", []), fault
        assert gauge(v, "veil_audit_up") == 1
    v.stop()
    result = verify([audit], load_config(v.config_path).keyring("audit"))
    assert result.ok, result.render()  # the failed writes left no gap in the chain
    log = (audit / "decisions.log").read_text()
    assert all(i in log for i in served) and not any(i in log for i in refused)


# ------------------------------------------------------------------ consent store
def test_consent_store_unreadable_fails_closed_and_recovers(veil_factory: Callable[..., Veil],
                                                            tmp_path: Path) -> None:
    """The SQLite file is not a database: consent purposes 503, contract and legitimate-interest
    purposes keep working; a valid file in its place is picked up without a restart."""
    directory = tmp_path / "store"  # veil_factory's directory for this veil
    directory.mkdir()
    (directory / "consent.db").write_bytes(b"this is not a SQLite database\n" * 200)
    v = veil_factory("store")

    assert_problem(v.get("/customers/c-000310", purpose=REC), 503, "consent_unavailable", "c-000310")
    assert_problem(v.get("/customers/c-000310", caller="ad_partner", purpose=ADS), 503, "consent_unavailable")
    assert_problem(v.get("/customers?limit=5", purpose=REC), 503, "consent_unavailable")
    ship = v.get("/customers/c-000310", caller="warehouse", purpose=SHIP)
    assert ship.status_code == 200 and ship.json()["id"] == "c-000310"
    sizes = v.get("/segments/sizes", caller="analytics", purpose="analytics.segments")
    assert sizes.status_code == 200
    bad = post_consent(v, "c-000310", "personalization", notice_version=3)
    assert bad.status_code == 503 and bad.json()["reason"] == "consent_unavailable"
    assert "c-000310" not in bad.text
    wait_for(lambda: ready(v) == (503, "degraded", ["consent_unavailable"]),
             what="/readyz to report the store down")
    assert gauge(v, "veil_consent_store_up") == 0

    (directory / "consent.db").unlink()  # the operator restores a good file (here: a new one)
    write_consent(v, "c-000310", "personalization", datetime.now(UTC))
    took = wait_for(lambda: v.get("/customers/c-000310", purpose=REC).status_code == 200, 3.0,
                    "consent to be readable again")
    wait_for(lambda: ready(v)[0] == 200, 4.0, "/readyz to report the store up")
    assert gauge(v, "veil_consent_store_up") == 1
    assert post_consent(v, "c-000311", "personalization", notice_version=3).status_code == 201
    assert v.get("/customers/c-000311", purpose=REC).status_code == 200
    print(f"\nconsent store: readable again {took:.2f}s after the file was replaced")


def test_consent_store_locked_fails_writes_closed_while_reads_go_on(veil_factory: Callable[..., Veil]) -> None:
    """Another process holds the SQLite write lock longer than veil's busy timeout (5 s): a consent
    write through the admin API fails closed (503, nothing recorded); reads, which WAL does not
    block, keep being answered from the store; after the lock is released writes work again."""
    v = veil_factory("locked")
    v.consent("c-000320", "personalization", notice_version=3)
    with contextlib.closing(sqlite3.connect(v.dir / "consent.db", isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        try:
            t0 = time.monotonic()
            r = post_consent(v, "c-000321", "personalization", notice_version=3)
            waited = time.monotonic() - t0
            assert r.status_code == 503 and r.json()["reason"] == "consent_unavailable", r.text
            assert 4.0 < waited < 9.0, waited
            time.sleep(0.6)  # past the cache TTL: the next read goes to the store
            ok = v.get("/customers/c-000320", purpose=REC)
            assert ok.status_code == 200, ok.text
            assert_problem(v.get("/customers/c-000321", purpose=REC), 403, "consent_missing")
        finally:
            other.execute("ROLLBACK")
    assert post_consent(v, "c-000321", "personalization", notice_version=3).status_code == 201
    assert v.get("/customers/c-000321", purpose=REC).status_code == 200

