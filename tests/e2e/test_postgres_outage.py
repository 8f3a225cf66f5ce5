"""A PostgreSQL outage seen from the proxy: consent-based purposes fail closed (503
consent_unavailable), purposes on other lawful bases keep working, /readyz says not ready; once the
server is back, veil recovers by itself.

Stops and starts the local cluster with pg_ctlcluster (root, Debian layout): marked slow, and the
server is always started again in a `finally`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Veil
from tests.e2e.test_postgres_replicas import (  # noqa: F401  (pg_schema, store_key: fixtures)
    NOTIFY_BOUND,
    PG_URL,
    direct_write,
    pg_schema,
    store_key,
    wait_for_block,
)
from veil.consent.store import SubjectHasher
from veil.keys import KeyRing

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REC = "personalize.recommendations"
RECOVERY_BOUND = 30.0  # seconds from the server accepting connections again to veil serving again


def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, capture_output=True, timeout=120)


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"], check=False).returncode == 0


def readyz(v: Veil) -> tuple[int, dict[str, object]]:
    r = v.client.get(v.admin + "/readyz")
    return r.status_code, r.json()


def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)
    return time.monotonic() - started


def reason(r: httpx.Response) -> tuple[int, str | None]:
    return r.status_code, (None if r.status_code == 200 else r.json().get("reason"))


def test_outage_fails_closed_and_recovers(
    veil_factory: Callable[..., Veil], pg_schema: str, store_key: tuple[str, bytes]  # noqa: F811
) -> None:
    if not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        pytest.skip("needs a local pg_ctlcluster cluster and root")
    v = veil_factory("outage", overrides={
        "consent": {"url": f"{PG_URL}?schema={pg_schema}", "cache_ttl": 30.0},
        "keys": {"store": store_key[0]},
    })
    for s in ("c-000021", "c-000022", "c-000023"):
        v.consent(s, "personalization", notice_version=3)
    assert reason(v.get("/customers/c-000021", purpose=REC)) == (200, None)
    assert readyz(v)[0] == 200
    try:
        pg_ctl("stop")
        # c-000022 has consent but was never looked up: nothing cached can answer for it
        r = v.get("/customers/c-000022", purpose=REC)
        assert reason(r) == (503, "consent_unavailable"), r.text
        assert r.headers["veil-decision"] == "block" and "c-000022" not in r.text
        listing = v.get("/customers?limit=5", purpose=REC)
        assert reason(listing) == (503, "consent_unavailable"), listing.text
        ship = v.get("/customers/c-000022", caller="warehouse", purpose="orders.fulfillment")
        assert reason(ship) == (200, None), ship.text  # contract basis: no consent lookup
        seg = v.get("/segments/sizes", caller="analytics", purpose="analytics.segments")
        assert reason(seg) == (200, None), seg.text  # legitimate interests
        grant = v.client.post(f"{v.admin}/consent/c-000024", json={"key": "personalization"},
                              headers={"Authorization": f"Bearer {v.tokens['consent']}"})
        assert grant.status_code == 503 and grant.json()["reason"] == "consent_unavailable"
        until(lambda: readyz(v)[0] == 503, 10.0, "/readyz turns not ready")
        _, body = readyz(v)
        assert body["checks"] == {"policy": True, "consent_store": False, "decision_log": True}
        assert 'veil_consent_store_up 0.0' in v.metrics()
    finally:
        pg_ctl("start")
    until(pg_ready, 60.0, "PostgreSQL accepts connections again")
    served = until(lambda: reason(v.get("/customers/c-000023", purpose=REC)) == (200, None),
                   RECOVERY_BOUND, "consent-based purpose served again")
    ready = until(lambda: readyz(v)[0] == 200, RECOVERY_BOUND, "/readyz ready again")
    print(f"\nrecovered: serving after {served:.2f}s, ready after a further {ready:.2f}s")
    assert readyz(v)[1]["checks"] == {"policy": True, "consent_store": True, "decision_log": True}
    # the LISTEN connection is back too: another system's write + NOTIFY beats the 30 s cache
    assert reason(v.get("/customers/c-000023", purpose=REC)) == (200, None)
    started = time.monotonic()
    direct_write(pg_schema, SubjectHasher(KeyRing.single(store_key[1]))("c-000023"), "withdrawn", notify=True)
    (latency,) = wait_for_block([v], "c-000023", started, NOTIFY_BOUND)
    assert latency <= NOTIFY_BOUND, latency
