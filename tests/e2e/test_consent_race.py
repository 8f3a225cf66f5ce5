"""The consistency contract within one veil: a consent write's 201 is sent only after every worker
has dropped the subject from its cache.

Two workers (SO_REUSEPORT), a 30 s consent cache (so only the invalidation can explain a block),
keep-alive connections pinned to each worker (which worker answered is read from its decision log).
Each trial withdraws through the admin API on a fresh connection (so either worker may take the write),
and the moment the 201 arrives sends the same request on every worker at once: each must be blocked
with `consent_withdrawn`. Then the grant, and every worker must serve again. Hundreds of trials, on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require
from tests.e2e.conftest import KEYS, Upstream, Veil, start_veil
from tests.e2e.test_postgres_replicas import PG_URL, pg_reachable, pg_schema, store_key  # noqa: F401  (fixtures)

TRIALS = 300
SUBJECT = "c-000777"
KEY = "personalization"
REC = "personalize.recommendations"
HEADERS = {"Veil-Key": KEYS["storefront"], "Veil-Purpose": REC}


class Pinned:
    """One keep-alive connection to the proxy, and the worker the kernel gave it to."""

    def __init__(self, v: Veil) -> None:
        host, port = v.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.worker = ""

    def send(self) -> None:
        self.conn.request("GET", f"/customers/{SUBJECT}", headers=HEADERS)

    def receive(self) -> tuple[int, str | None, str]:
        r = self.conn.getresponse()
        body = r.read()
        reason = None if r.status == 200 else json.loads(body).get("reason")
        return r.status, reason, r.getheader("Veil-Decision-Id") or ""


def worker_of(v: Veil, decision_id: str) -> str:
    """The worker whose decision log holds this decision (written before the response left)."""
    for log in sorted((v.dir / "audit").glob("decisions-w*.log")):
        if decision_id.encode() in log.read_bytes():
            return log.stem.removeprefix("decisions-")
    raise AssertionError(f"decision {decision_id} is in no worker's log")


def pin_every_worker(v: Veil, workers: int) -> list[Pinned]:
    """A connection on each worker (new connections until every worker holds one)."""
    found: dict[str, Pinned] = {}
    for _ in range(200):
        p = Pinned(v)
        p.send()
        _, _, decision = p.receive()
        p.worker = worker_of(v, decision)
        if p.worker in found:
            p.conn.close()
        else:
            found[p.worker] = p
        if len(found) == workers:
            return [found[w] for w in sorted(found)]
    raise AssertionError(f"the kernel gave every connection to {sorted(found)}")


def post(v: Veil, action: str) -> httpx.Response:
    """A consent write on a fresh connection: the kernel picks the worker that takes it."""
    return v.client.post(f"{v.admin}/consent/{SUBJECT}", json={"key": KEY, "action": action, "notice_version": 3},
                         headers={"Authorization": f"Bearer {v.tokens['consent']}", "Connection": "close"})


def at_once(pins: list[Pinned]) -> list[tuple[int, str | None]]:
    for p in pins:
        p.send()  # every request is on the wire before any answer is read
    return [p.receive()[:2] for p in pins]


def race(v: Veil, workers: int, trials: int, others: tuple[Veil, ...] = ()) -> dict[str, Any]:
    """Writes through `v`; after each answer, a request on every worker of `v` and of `others`."""
    pins = pin_every_worker(v, workers)
    for other in others:
        pins += pin_every_worker(other, workers)
    served = {"given": (200, None), "withdrawn": (403, "consent_withdrawn")}
    stale: list[tuple[int, str, str, list[tuple[int, str | None]]]] = []
    answer_ms: list[float] = []
    propagation_ms: list[float] = []
    assert post(v, "given").status_code == 201
    for trial in range(trials):
        for action in ("withdrawn", "given"):
            started = time.perf_counter()
            r = post(v, action)
            answer_ms.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 201, r.text
            prop = r.json()["propagation"]
            assert prop["complete"] and prop["pending"] == [], prop
            assert len(prop["acknowledged"]) == workers * (1 + len(others)), prop
            propagation_ms.append(prop["waited_ms"])
            seen = at_once(pins)
            if any(s != served[action] for s in seen):
                stale.append((trial, action, r.json()["propagation"]["acknowledged"][0], seen))
    for p in pins:
        p.conn.close()
    return {"stale": stale, "answer_ms": answer_ms, "propagation_ms": propagation_ms,
            "workers": [p.worker for p in pins]}


REPLICA_TRIALS = 200


def summary(what: str, result: dict[str, Any], trials: int) -> str:
    a, w = sorted(result["answer_ms"]), sorted(result["propagation_ms"])
    p99 = lambda xs: xs[int(len(xs) * 0.99) - 1]  # noqa: E731
    return (f"\n{what}: {2 * trials} writes, {len(result['stale'])} stale answers on workers "
            f"{result['workers']}; write answered in {statistics.median(a):.2f} ms median "
            f"(p99 {p99(a):.2f}); acknowledgements took {statistics.median(w):.2f} ms median (p99 {p99(w):.2f})")


@pytest.fixture
def two_workers(tmp_path: Path, demo_upstream: Upstream) -> Iterator[Callable[..., Veil]]:
    started: list[Veil] = []

    def make(name: str = "veil", keys: dict[str, str] | None = None, **consent: Any) -> Veil:
        overrides: dict[str, Any] = {"workers": 2, "consent": {"cache_ttl": 30.0, **consent}}
        if keys:
            overrides["keys"] = keys
        v = start_veil(tmp_path / name, demo_upstream.url, overrides=overrides, wait="/readyz", ready_timeout=60.0)
        started.append(v)
        return v

    yield make
    for v in started:
        v.stop()


@pytest.mark.slow
def test_every_worker_has_dropped_the_subject_when_the_201_arrives_sqlite(
    two_workers: Callable[..., Veil]
) -> None:
    v = two_workers()
    result = race(v, 2, TRIALS)
    print(summary("sqlite, 2 workers", result, TRIALS))
    assert result["stale"] == [], result["stale"][:5]


@pytest.mark.slow
@pytest.mark.postgres
def test_every_worker_has_dropped_the_subject_when_the_201_arrives_postgres(
    two_workers: Callable[..., Veil], pg_schema: str  # noqa: F811
) -> None:
    require(pg_reachable(), "PostgreSQL at 127.0.0.1:5432")
    v = two_workers(url=f"{PG_URL}?schema={pg_schema}")
    result = race(v, 2, TRIALS)
    print(summary("postgresql, 2 workers", result, TRIALS))
    assert result["stale"] == [], result["stale"][:5]


@pytest.mark.slow
@pytest.mark.postgres
def test_every_worker_of_every_replica_has_dropped_the_subject_when_the_201_arrives(
    two_workers: Callable[..., Veil], pg_schema: str, store_key: tuple[str, bytes]  # noqa: F811
) -> None:
    require(pg_reachable(), "PostgreSQL at 127.0.0.1:5432")
    url = f"{PG_URL}?schema={pg_schema}"
    a = two_workers("replica-a", keys={"store": store_key[0]}, url=url)
    b = two_workers("replica-b", keys={"store": store_key[0]}, url=url)
    result = race(a, 2, REPLICA_TRIALS, others=(b,))
    print(summary("postgresql, 2 replicas x 2 workers", result, REPLICA_TRIALS))
    assert result["stale"] == [], result["stale"][:5]
