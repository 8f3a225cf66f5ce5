"""PostgreSQL cut off from a running veil, and a veil started while it is cut off: through a TCP relay
the test controls (it goes silent like a network partition; the shared server is never touched).

- Consent-based purposes fail closed (503 `consent_unavailable`) within the short request-path
  timeouts, then at once while the circuit is open; purposes on other lawful bases keep working;
  consent writes fail closed at once; `/readyz` says `degraded` with `consent_unavailable`.
- Healed: veil serves again by itself, and the LISTEN connection is back (a direct write + NOTIFY
  from another system beats the 30 s cache).
- Started during the partition: veil listens, serves what needs no consent, is not ready (503, or 200
  with `?tolerate=consent_unavailable`), and becomes ready when the database answers (migrating the
  schema on the way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.conftest import Veil
from tests.e2e.test_postgres_replicas import (  # noqa: F401  (pg_schema, store_key: fixtures)
    NOTIFY_BOUND,
    direct_write,
    pg,
    pg_schema,
    store_key,
    wait_for_block,
)
from tests.relay import Relay
from veil.consent.store import SubjectHasher
from veil.keys import KeyRing

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REC = "personalize.recommendations"
RECOVERY_BOUND = 5.0  # seconds from the network healing to veil serving consent-based purposes again
FIRST_FAILURE_BOUND = 1.0  # query_timeout or acquire_timeout (0.5 s each by default), and slack
AT_ONCE = 0.1  # seconds: an answer while the circuit is open (HTTP round trip included)


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay(5432)
    yield r
    r.close()


def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def reason(r: httpx.Response) -> tuple[int, str | None]:
    return r.status_code, (None if r.status_code == 200 else r.json().get("reason"))


def timed(fn: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = fn()
    return r, time.monotonic() - started


def status(v: Veil, **params: str) -> tuple[int, str, list[str]]:
    r = v.readyz(**params)
    return r.status_code, r.json()["status"], r.json()["reasons"]


def grant(v: Veil, subject: str) -> httpx.Response:
    return v.client.post(f"{v.admin}/consent/{subject}", json={"key": "personalization", "notice_version": 3},
                         headers={"Authorization": f"Bearer {v.tokens['consent']}"})


def test_partition_fails_closed_fast_and_recovers(
    veil_factory: Callable[..., Veil], relay: Relay, pg_schema: str, store_key: tuple[str, bytes]  # noqa: F811
) -> None:
    v = veil_factory("outage", overrides={
        "consent": {"url": f"postgresql://postgres@127.0.0.1:{relay.port}/test?schema={pg_schema}",
                    "cache_ttl": 30.0},
        "keys": {"store": store_key[0]},
    })
    for s in ("c-000021", "c-000022", "c-000023"):
        v.consent(s, "personalization", notice_version=3)
    assert reason(v.get("/customers/c-000021", purpose=REC)) == (200, None)
    assert status(v) == (200, "ready", [])
    relay.blackhole()
    # c-000022 has consent but was never looked up: nothing cached can answer for it
    first, took = timed(lambda: v.get("/customers/c-000022", purpose=REC))
    assert reason(first) == (503, "consent_unavailable"), first.text
    assert first.headers["veil-decision"] == "block" and "c-000022" not in first.text
    timings = [took]
    for _ in range(3):  # until the circuit opens (consent.circuit_failures, default 3)
        r, took = timed(lambda: v.get("/customers/c-000022", purpose=REC))
        assert reason(r) == (503, "consent_unavailable")
        timings.append(took)
    fast = [timed(lambda: v.get("/customers/c-000022", purpose=REC)) for _ in range(20)]
    listing, list_took = timed(lambda: v.get("/customers?limit=5", purpose=REC))
    write, write_took = timed(lambda: grant(v, "c-000024"))
    print(f"\nsilent network: lookups failed after {[round(t, 3) for t in timings]} s; then in "
          f"{max(t for _, t in fast) * 1000:.1f} ms at most (list {list_took * 1000:.1f} ms, "
          f"consent write {write_took * 1000:.1f} ms)")
    assert max(timings) <= FIRST_FAILURE_BOUND, timings
    assert all(reason(r) == (503, "consent_unavailable") for r, _ in fast)
    assert max(t for _, t in fast) <= AT_ONCE, fast
    assert reason(listing) == (503, "consent_unavailable") and list_took <= AT_ONCE
    assert write.status_code == 503 and write.json()["reason"] == "consent_unavailable" and write_took <= AT_ONCE
    ship = v.get("/customers/c-000022", caller="warehouse", purpose="orders.fulfillment")
    assert reason(ship) == (200, None), ship.text  # contract basis: no consent lookup
    seg = v.get("/segments/sizes", caller="analytics", purpose="analytics.segments")
    assert reason(seg) == (200, None), seg.text  # legitimate interests
    # the cached grant of c-000021 is not honoured once this veil's lease lapses (it cannot hear withdrawals)
    until(lambda: reason(v.get("/customers/c-000021", purpose=REC)) == (503, "consent_unavailable"), 5.0,
          "cached consent stops being honoured")
    assert status(v) == (503, "degraded", ["consent_unavailable"])
    assert status(v, tolerate="consent_unavailable") == (200, "degraded", ["consent_unavailable"])
    assert "veil_consent_store_up 0.0" in v.metrics() and "veil_consent_circuit_open 1.0" in v.metrics()

    relay.restore()
    served = until(lambda: reason(v.get("/customers/c-000023", purpose=REC)) == (200, None),
                   RECOVERY_BOUND, "consent-based purpose served again")
    ready = until(lambda: status(v)[0] == 200, RECOVERY_BOUND, "/readyz ready again")
    print(f"healed: serving after {served:.2f}s, ready after a further {ready:.2f}s")
    assert status(v) == (200, "ready", [])
    # the LISTEN connection is back too: another system's write + NOTIFY beats the 30 s cache
    assert reason(v.get("/customers/c-000023", purpose=REC)) == (200, None)
    started = time.monotonic()
    direct_write(pg_schema, SubjectHasher(KeyRing.single(store_key[1]))("c-000023"), "withdrawn", notify=True)
    (latency,) = wait_for_block([v], "c-000023", started, NOTIFY_BOUND)
    assert latency <= NOTIFY_BOUND, latency


def test_starts_while_the_database_is_unreachable(
    veil_factory: Callable[..., Veil], relay: Relay, pg_schema: str, store_key: tuple[str, bytes]  # noqa: F811
) -> None:
    relay.blackhole()
    started = time.monotonic()
    v = veil_factory("cold", overrides={
        "workers": 2,
        "consent": {"url": f"postgresql://postgres@127.0.0.1:{relay.port}/test?schema={pg_schema}"},
        "keys": {"store": store_key[0]},
    }, ready_timeout=60.0)
    up = time.monotonic() - started
    # every worker is up: /readyz answers for both, and only the consent store is missing
    until(lambda: status(v) == (503, "degraded", ["consent_unavailable"]), 60.0, "both workers up")
    assert status(v, tolerate="consent_unavailable")[0] == 200
    assert v.proc.poll() is None
    ship = v.get("/customers/c-000031", caller="warehouse", purpose="orders.fulfillment")
    assert reason(ship) == (200, None), ship.text
    r, took = timed(lambda: v.get("/customers/c-000031", purpose=REC))
    assert reason(r) == (503, "consent_unavailable") and took <= AT_ONCE, (r.text, took)
    tables = pg("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", pg_schema)
    assert tables == []  # nothing reached the database

    relay.restore()
    ready = until(lambda: status(v)[0] == 200, RECOVERY_BOUND, "ready once the database answers")
    print(f"\nstarted without the database in {up:.2f}s; ready {ready:.2f}s after it answered")
    assert grant(v, "c-000031").status_code == 201  # the schema was migrated on the way
    assert reason(v.get("/customers/c-000031", purpose=REC)) == (200, None)
