"""Scale-out over real sockets: two veil processes on one PostgreSQL consent store (one schema).

A withdrawal made through one replica is answered once the other replica acknowledged it (the next
request there is blocked, with a 30 s cache); a replica that cannot hear is named in a 202 with the
time by which it honours the withdrawal, and it does. A write straight into the tables by another
system that sends `NOTIFY veil_consent, '<subject hash>'` is enforced by every replica within a second:
only the LISTEN/NOTIFY path can explain that. A write without NOTIFY is enforced once
cache entries expire (the cache TTL bound). Also: `veil consent migrate --store URL` against the server.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import require
from tests.e2e.conftest import Veil
from tests.relay import Relay
from veil.cli import main
from veil.consent._schema_pg import MIGRATIONS
from veil.consent.store import SubjectHasher
from veil.keys import KeyRing

LATEST = max(v for v, _ in MIGRATIONS)

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("VEIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REC = "personalize.recommendations"
KEY = "personalization"
NOTIFY_BOUND = 1.0  # seconds: cross-replica invalidation through NOTIFY
POLL = 0.02


def pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


def pg(sql: str, *args: Any) -> list[Any]:
    """Run one statement on the test database from outside veil (as another system would)."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(PG_URL, timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def pg_schema() -> Iterator[str]:
    require(pg_reachable(), "PostgreSQL at 127.0.0.1:5432")
    name = f"veil_e2e_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield name
    pg(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def store_key(tmp_path: Path) -> tuple[str, bytes]:
    """One store key file for all replicas: they must hash subjects alike to share rows."""
    key = os.urandom(32)
    path = tmp_path / "shared-store.key"
    path.write_text(key.hex())
    path.chmod(0o600)
    return f"file:{path}", key


Replicas = Callable[..., list[Veil]]


@pytest.fixture
def replicas(veil_factory: Callable[..., Veil], pg_schema: str, store_key: tuple[str, bytes]) -> Replicas:
    def make(n: int = 2, *, cache_ttl: float = 30.0) -> list[Veil]:
        overrides = {
            "consent": {"url": f"{PG_URL}?schema={pg_schema}", "cache_ttl": cache_ttl},
            "keys": {"store": store_key[0]},
        }
        return [veil_factory(f"replica-{i}", overrides=overrides) for i in range(n)]

    return make


def status_of(v: Veil, subject: str) -> tuple[int, str | None]:
    r = v.get(f"/customers/{subject}", purpose=REC)
    return r.status_code, (r.json().get("reason") if r.status_code != 200 else None)


def wait_for_block(replicas: list[Veil], subject: str, started: float, bound: float) -> list[float]:
    """Poll every replica until it blocks with consent_withdrawn; return each one's latency."""
    latency: dict[int, float] = {}
    deadline = started + bound + 5.0  # poll past the bound, so a failure reports how late it was
    while len(latency) < len(replicas) and time.monotonic() < deadline:
        for i, v in enumerate(replicas):
            if i not in latency and status_of(v, subject) == (403, "consent_withdrawn"):
                latency[i] = time.monotonic() - started
        time.sleep(POLL)
    missing = [i for i in range(len(replicas)) if i not in latency]
    assert not missing, f"replicas {missing} still serve {subject} {bound + 5.0:.1f}s after the withdrawal"
    return [latency[i] for i in range(len(replicas))]


def warm(replicas: list[Veil], subject: str) -> None:
    for v in replicas:
        assert status_of(v, subject) == (200, None)


def direct_write(schema: str, subject_hash: str, action: str, *, notify: bool) -> None:
    """What another system does: append an event, move the current state, and (optionally) NOTIFY."""
    pg(
        f"""
        WITH ins AS (
            INSERT INTO "{schema}".consent_events (event_id, subject_hash, consent_key, action, at, source, method)
            VALUES (gen_random_uuid(), $1, $2, $3, now(), 'crm', 'direct-sql')
            RETURNING seq, subject_hash, consent_key, action, at, source
        )
        INSERT INTO "{schema}".consent_current AS c (subject_hash, consent_key, action, at, source, event_seq)
        SELECT subject_hash, consent_key, action, at, source, seq FROM ins
        ON CONFLICT (subject_hash, consent_key) DO UPDATE SET action = excluded.action, at = excluded.at,
            notice_version = NULL, expires_at = NULL, source = excluded.source, event_seq = excluded.event_seq
        """,
        subject_hash, KEY, action,
    )
    if notify:
        pg("SELECT pg_notify('veil_consent', $1)", subject_hash)


def member(v: Veil, worker: str = "main") -> str:
    """A veil process's name in consent write answers: host:pid of the replica, then the worker."""
    return f"{socket.gethostname()}:{v.proc.pid}/{worker}"


def test_withdrawal_through_one_replica_is_acknowledged_by_the_other(replicas: Replicas) -> None:
    a, b = replicas(2, cache_ttl=30.0)
    subject = "c-000011"
    a.consent(subject, KEY, notice_version=3)
    warm([a, b], subject)
    warm([a, b], subject)  # the second round is served from each replica's 30 s cache
    r = a.client.post(f"{a.admin}/consent/{subject}", json={"key": KEY, "action": "withdrawn"},
                      headers={"Authorization": f"Bearer {a.tokens['consent']}"})
    # the 201 comes once B has dropped the subject: the very next request on B is blocked
    assert status_of(b, subject) == (403, "consent_withdrawn")
    assert status_of(a, subject) == (403, "consent_withdrawn")
    assert r.status_code == 201, r.text
    prop = r.json()["propagation"]
    assert prop["complete"] is True and prop["pending"] == []
    assert prop["acknowledged"] == [member(a), member(b)]
    assert r.headers["veil-consent-effective-by"] == prop["effective_by"]
    print(f"\nwithdraw through A: B acknowledged after {prop['waited_ms']} ms")


def test_a_replica_that_cannot_hear_is_named_and_stops_serving_by_the_stated_time(
    veil_factory: Callable[..., Veil], pg_schema: str, store_key: tuple[str, bytes]
) -> None:
    """Replica B reaches PostgreSQL through a relay that goes silent. A withdrawal through A waits
    `consent.ack_timeout`, answers 202 naming B and the time by which B honours it (B's lease), and
    B does stop serving the subject from its cache by then."""
    with Relay(5432) as relay:
        overrides = {"consent": {"url": f"{PG_URL}?schema={pg_schema}", "cache_ttl": 30.0},
                     "keys": {"store": store_key[0]}}
        a = veil_factory("replica-a", overrides=overrides)
        b = veil_factory("replica-b", overrides={**overrides, "consent": {
            **overrides["consent"], "url": f"postgresql://postgres@127.0.0.1:{relay.port}/test?schema={pg_schema}"}})
        subject = "c-000014"
        a.consent(subject, KEY, notice_version=3)
        warm([a, b], subject)
        relay.blackhole()
        started = time.monotonic()
        r = a.client.post(f"{a.admin}/consent/{subject}", json={"key": KEY, "action": "withdrawn"},
                          headers={"Authorization": f"Bearer {a.tokens['consent']}"})
        answered = time.monotonic() - started
        assert r.status_code == 202, r.text
        prop = r.json()["propagation"]
        assert prop["complete"] is False and prop["pending"] == [member(b)] and prop["acknowledged"] == [member(a)]
        deadline = datetime.fromisoformat(prop["effective_by"].replace("Z", "+00:00"))
        left = (deadline - datetime.now(UTC)).total_seconds()
        assert 0 < left <= 3.0, left  # the lease (3 s) is shorter than the cache TTL (30 s)
        stale_until = time.monotonic()
        while status_of(b, subject) == (200, None):
            stale_until = time.monotonic()
            time.sleep(POLL)
        print(f"\nB cut off: A answered 202 after {answered:.2f}s; B served the subject until "
              f"{stale_until - started:.2f}s after the write, the answer promised {left + answered:.2f}s")
        assert datetime.now(UTC) <= deadline + timedelta(seconds=0.2)
        assert status_of(b, subject) == (503, "consent_unavailable")  # no lease, no database: closed
        # a replica whose lease ran out is not waited for: the next write through A is complete at once
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.2)
        r2 = a.client.post(f"{a.admin}/consent/c-000015", json={"key": KEY},
                           headers={"Authorization": f"Bearer {a.tokens['consent']}"})
        assert r2.status_code == 201 and r2.json()["propagation"]["acknowledged"] == [member(a)], r2.text
        relay.restore()
        t = time.monotonic()
        while status_of(b, subject) != (403, "consent_withdrawn"):
            assert time.monotonic() - t < 10, "B did not come back"
            time.sleep(POLL)


def test_direct_database_write_with_notify_reaches_both(
    replicas: Replicas, pg_schema: str, store_key: tuple[str, bytes]
) -> None:
    a, b = replicas(2, cache_ttl=30.0)
    subject = "c-000012"
    a.consent(subject, KEY, notice_version=3)
    warm([a, b], subject)
    warm([a, b], subject)
    h = SubjectHasher(KeyRing.single(store_key[1]))(subject)
    started = time.monotonic()
    direct_write(pg_schema, h, "withdrawn", notify=True)
    latencies = wait_for_block([a, b], subject, started, NOTIFY_BOUND)
    print(f"\ndirect SQL + NOTIFY: blocked after {[round(x * 1000) for x in latencies]} ms")
    assert max(latencies) <= NOTIFY_BOUND, latencies


def test_write_without_notify_is_bounded_by_the_cache_ttl(
    replicas: Replicas, pg_schema: str, store_key: tuple[str, bytes]
) -> None:
    ttl = 2.0
    a, b = replicas(2, cache_ttl=ttl)
    subject = "c-000013"
    a.consent(subject, KEY, notice_version=3)
    time.sleep(0.3)  # let the grant's own NOTIFY land first: it would drop B's fresh entry
    warm([a, b], subject)  # misses: both replicas now cache "given" for `ttl` seconds
    h = SubjectHasher(KeyRing.single(store_key[1]))(subject)
    started = time.monotonic()
    direct_write(pg_schema, h, "withdrawn", notify=False)
    stale = [status_of(v, subject) for v in (a, b)]
    latencies = wait_for_block([a, b], subject, started, ttl)
    print(f"\ndirect SQL without NOTIFY (ttl {ttl}s): blocked after {[round(x * 1000) for x in latencies]} ms")
    assert stale == [(200, None), (200, None)], "without NOTIFY the cached grant is honoured until expiry"
    assert max(latencies) <= ttl + 0.5, latencies


def test_migrate_cli_against_postgres(pg_schema: str, capsys: pytest.CaptureFixture[str],
                                      store_key: tuple[str, bytes]) -> None:
    url = f"{PG_URL}?schema={pg_schema}"
    argv = ["consent", "migrate", "--store", url, "--store-key", store_key[0]]
    assert main(argv) == 0
    assert f"schema {pg_schema}) at version {LATEST}" in capsys.readouterr().out
    assert main(argv) == 0  # idempotent
    versions = pg(f'SELECT version FROM "{pg_schema}".veil_schema_version')
    assert [r[0] for r in versions] == list(range(1, LATEST + 1))
    tables = pg("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", pg_schema)
    assert {"consent_events", "consent_current", "veil_import_progress"} <= {r[0] for r in tables}
