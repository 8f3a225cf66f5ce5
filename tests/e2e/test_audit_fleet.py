"""The decision log of a fleet, over real sockets: several veil processes (replicas) ship their logs to
one PostgreSQL store through a TCP relay the test controls. The relay is cut to make an outage (the
shared server is never stopped): veil keeps serving, the backlog stays on disk and is shipped once the
relay is back; over its bound it refuses (or serves and counts, as configured). A replica killed with
SIGKILL under load ships every acknowledged decision after its restart. `veil audit verify --store`
checks the result, and the per-subject report from any replica covers the whole fleet."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.e2e.conftest import Veil, spawn, wait_http
from tests.e2e.relay import Relay
from tests.e2e.test_postgres_replicas import PG_URL, pg, pg_schema  # noqa: F401  (fixture)
from veil.cli import main

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FULFIL = {"caller": "warehouse", "purpose": "orders.fulfillment"}  # contract basis: no consent needed


@pytest.fixture
def relay() -> Iterator[Relay]:
    r = Relay(("127.0.0.1", 5432)).start()
    yield r
    r.stop()


@pytest.fixture
def shared_keys(tmp_path: Path) -> dict[str, str]:
    """One audit and one pseudonym key for the fleet (verification and reports span replicas)."""
    refs = {}
    for name in ("audit", "pseudonym"):
        p = tmp_path / f"fleet-{name}.key"
        p.write_text(secrets.token_hex(32))
        p.chmod(0o600)
        refs[name] = f"file:{p}"
    return refs


Fleet = Callable[..., Veil]


@pytest.fixture
def fleet(veil_factory: Callable[..., Veil], relay: Relay, pg_schema: str,  # noqa: F811
          shared_keys: dict[str, str]) -> Fleet:
    def make(name: str, **ship: Any) -> Veil:
        ship = {"url": f"postgresql://postgres@127.0.0.1:{relay.port}/test?schema={pg_schema}", "replica": name,
                "timeout": 2, **ship}
        return veil_factory(name, overrides={"audit": {"ship": ship, "fsync_interval_ms": 20},
                                             "keys": shared_keys})
    return make


def metric(v: Veil, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", v.metrics(), re.M)
    return float(m.group(1)) if m else 0.0


def until(cond: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def shipped(v: Veil) -> bool:
    """The replica's own view (its metrics, refreshed at each shipping step)."""
    return metric(v, "veil_audit_ship_lag_records") == 0 and metric(v, "veil_audit_ship_records_total") > 0


def in_store(schema: str, acked: list[str]) -> Callable[[], bool]:
    """The store's view: every acknowledged decision is there."""
    return lambda: set(acked) <= set(decision_ids(schema))


def decision_ids(schema: str) -> list[str]:
    try:
        rows = pg(f'SELECT line FROM "{schema}".audit_records WHERE kind = \'decision\'')
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return []  # no shipper has created the tables yet
    return [orjson.loads(r["line"])["id"] for r in rows]


def fulfil(v: Veil, subject: str) -> httpx.Response:
    return v.get(f"/customers/{subject}", **FULFIL)


def verify_cli(schema: str, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", "--store", f"{PG_URL}?schema={schema}", "--key", keys["audit"]])
    return code, capsys.readouterr().out


def test_replicas_ship_through_an_outage(fleet: Fleet, relay: Relay, pg_schema: str,  # noqa: F811
                                         shared_keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    replicas = [fleet(f"replica-{i}") for i in range(3)]
    acked: list[str] = []
    for i in range(30):
        r = fulfil(replicas[i % 3], f"c-0000{31 + i % 5}")
        assert r.status_code == 200, r.text
        acked.append(r.headers["veil-decision-id"])
    until(in_store(pg_schema, acked), 20, "shipped")
    assert sorted(decision_ids(pg_schema)) == sorted(acked)

    relay.cut()  # PostgreSQL is gone for veil
    for i in range(30):
        r = fulfil(replicas[i % 3], f"c-0000{31 + i % 5}")
        assert r.status_code == 200, r.text  # veil keeps serving: the log is local
        acked.append(r.headers["veil-decision-id"])
    until(lambda: all(metric(v, "veil_audit_ship_lag_records") >= 10 for v in replicas), 10, "lag grows")
    assert all(metric(v, "veil_audit_ship_backlog_bytes") > 0 for v in replicas)
    until(lambda: metric(replicas[0], 'veil_audit_ship_errors_total{reason="unreachable"}') > 0, 10, "errors counted")
    assert all(v.client.get(v.admin + "/readyz").status_code == 200 for v in replicas)  # under the bound
    assert len(decision_ids(pg_schema)) == 30

    relay.restore()
    waited = until(in_store(pg_schema, acked), 30, "caught up")
    print(f"\ncaught up {waited:.2f}s after the relay was restored")
    until(lambda: all(shipped(v) for v in replicas), 10, "every replica reports no lag")
    ids = decision_ids(pg_schema)
    assert sorted(ids) == sorted(acked) and len(set(ids)) == 60  # every one, exactly once
    assert all(metric(v, "veil_audit_ship_lag_seconds") == 0 for v in replicas)

    code, out = verify_cli(pg_schema, shared_keys, capsys)
    assert code == 0, out
    assert [line.split()[1] for line in out.splitlines()[:-1]] == ["replica-0/main", "replica-1/main", "replica-2/main"]

    # the report from one replica covers the fleet (the store, through the subject index)
    r = replicas[0].client.get(f"{replicas[0].admin}/audit/report", params={"subject": "c-000032"},
                               headers={"Authorization": f"Bearer {replicas[0].tokens['audit']}"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["verified"] is True
    assert len(report["disclosures"]) == 12 and {d["caller"] for d in report["disclosures"]} == {"warehouse"}
    page = replicas[1].client.get(f"{replicas[1].admin}/audit/report",
                                  params={"subject": "c-000032", "format": "html"},
                                  headers={"Authorization": f"Bearer {replicas[1].tokens['audit']}"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
    assert "Who received your data" in page.text and "orders.fulfillment" in page.text
    assert "c-000032" not in page.text  # the page names the pseudonym, never the subject id
    for v in replicas:
        log_text = v.stop()
        assert "c-0000" not in log_text


def test_a_silent_database_times_out_and_recovers(fleet: Fleet, relay: Relay, pg_schema: str) -> None:  # noqa: F811
    v = fleet("silent")
    first = [fulfil(v, "c-000040").headers["veil-decision-id"]]
    until(in_store(pg_schema, first), 20, "shipped")
    relay.cut(hang=True)  # connections accepted and never answered
    acked = [fulfil(v, f"c-00004{i}").headers["veil-decision-id"] for i in range(5)]
    until(lambda: metric(v, 'veil_audit_ship_errors_total{reason="timeout"}') > 0, 20, "a timeout counted")
    assert metric(v, "veil_audit_ship_lag_records") >= 5
    relay.restore()
    until(in_store(pg_schema, acked), 40, "caught up")


def test_over_the_bound_it_refuses_and_recovers(fleet: Fleet, relay: Relay, pg_schema: str,  # noqa: F811
                                                shared_keys: dict[str, str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    v = fleet("bounded", max_backlog=16384, on_full="refuse")
    until(in_store(pg_schema, [fulfil(v, "c-000050").headers["veil-decision-id"]]), 20, "shipped")
    relay.cut()
    served, refused = [], None
    for i in range(200):
        r = fulfil(v, f"c-0000{50 + i % 9}")
        if r.status_code == 200:
            served.append(r.headers["veil-decision-id"])
            continue
        refused = r
        break
    assert refused is not None, "never refused"
    body = refused.json()
    assert (refused.status_code, body["reason"]) == (503, "audit_backlog_full")
    assert refused.headers["content-type"] == "application/problem+json" and "c-0000" not in refused.text
    assert 10 < len(served) < 30  # about 16 KB of records (about 750 bytes each), at most one batch more
    rz = v.client.get(v.admin + "/readyz")
    assert rz.status_code == 503 and rz.json()["reasons"] == ["audit_backlog_full"], rz.text
    assert metric(v, "veil_audit_ship_backlog_full") == 1
    assert fulfil(v, "c-000051").status_code == 503  # still refusing
    assert v.get("/customers/c-000051", caller="nobody", purpose="x").status_code == 401  # blocks still answered

    relay.restore()
    until(lambda: fulfil(v, "c-000052").status_code == 200, 30, "serving again")
    until(lambda: v.client.get(v.admin + "/readyz").status_code == 200, 10, "ready again")
    until(in_store(pg_schema, served), 20, "caught up")
    code, out = verify_cli(pg_schema, shared_keys, capsys)
    assert code == 0, out


def test_over_the_bound_it_serves_and_counts(fleet: Fleet, relay: Relay, pg_schema: str,  # noqa: F811
                                             shared_keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    v = fleet("lenient", max_backlog=16384, on_full="serve")
    until(in_store(pg_schema, [fulfil(v, "c-000060").headers["veil-decision-id"]]), 20, "shipped")
    relay.cut()
    for i in range(80):
        r = fulfil(v, f"c-0000{60 + i % 9}")
        assert r.status_code == 200, r.text
        time.sleep(0.01)
    unrecorded = metric(v, "veil_audit_unrecorded_total")
    assert unrecorded > 20 and metric(v, "veil_audit_ship_backlog_full") == 1
    assert v.client.get(v.admin + "/readyz").status_code == 200  # serving, as configured
    relay.restore()
    until(lambda: metric(v, "veil_audit_ship_backlog_full") == 0, 30, "backlog under the bound")
    last = fulfil(v, "c-000061")  # recorded again (after the `unrecorded` record)
    assert last.status_code == 200
    until(in_store(pg_schema, [last.headers["veil-decision-id"]]), 20, "caught up")
    rows = pg(f'SELECT line FROM "{pg_schema}".audit_records WHERE kind = \'unrecorded\'')
    assert [orjson.loads(r["line"])["count"] for r in rows] == [int(unrecorded)]
    assert len(decision_ids(pg_schema)) == 1 + 80 - int(unrecorded) + 1
    code, out = verify_cli(pg_schema, shared_keys, capsys)
    assert code == 0 and f"{int(unrecorded)} decisions were not recorded" in out, out


def restart(v: Veil) -> Veil:
    proc = spawn([sys.executable, "-m", "veil", "serve", "--config", str(v.config_path)], v.dir / "veil-2.log",
                 env=dict(os.environ))
    wait_http(v.admin + "/healthz", proc=proc)
    return dataclasses.replace(v, proc=proc, client=httpx.Client(timeout=10.0))


def test_a_replica_killed_mid_load_ships_every_acknowledged_decision(
        fleet: Fleet, pg_schema: str, shared_keys: dict[str, str],  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    v = fleet("killed")
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client(timeout=5.0) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.get(f"{v.url}/customers/c-0000{70 + (n + i) % 9}",
                              headers={"Veil-Key": "demo-warehouse-key", "Veil-Purpose": "orders.fulfillment"})
                except httpx.HTTPError:
                    continue  # the process is gone: this one was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.append(r.headers["veil-decision-id"])

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    v.proc.send_signal(signal.SIGKILL)
    v.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 50
    back = restart(v)
    until(lambda: shipped(back), 30, "shipped after the restart")
    time.sleep(0.5)  # (the metric may be one shipping step behind)
    until(lambda: shipped(back), 30, "shipped after the restart")
    ids = set(decision_ids(pg_schema))
    missing = [i for i in acked if i not in ids]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged decisions never reached the store"
    code, out = verify_cli(pg_schema, shared_keys, capsys)
    assert code == 0, out
    back.stop()


def test_a_sidecar_ships_for_a_veil_that_does_not(veil_factory: Callable[..., Veil], pg_schema: str,  # noqa: F811
                                                  shared_keys: dict[str, str]) -> None:
    from tests.conftest import free_port

    url = f"{PG_URL}?schema={pg_schema}"
    v = veil_factory("with-sidecar", overrides={
        "audit": {"ship": {"url": url, "replica": "pod-1", "shipper": "sidecar"}, "fsync": "always"},
        "keys": shared_keys})
    mport = free_port()
    sidecar = spawn([sys.executable, "-m", "veil", "audit", "ship", "--config", str(v.config_path),
                     "--metrics", f"127.0.0.1:{mport}"], v.dir / "sidecar.log")
    try:
        wait_http(f"http://127.0.0.1:{mport}/metrics", proc=sidecar)
        acked = [fulfil(v, f"c-00008{i}").headers["veil-decision-id"] for i in range(10)]
        until(lambda: set(acked) <= set(decision_ids(pg_schema)), 20, "the sidecar shipped")
        text = httpx.get(f"http://127.0.0.1:{mport}/metrics").text
        assert re.search(r"^veil_audit_ship_records_total [1-9]", text, re.M), text
        assert (v.dir / "audit" / "decisions.log.ship").exists()
        assert metric(v, "veil_audit_ship_records_total") == 0  # veil itself ships nothing
        assert v.client.get(v.admin + "/readyz").json()["status"] == "ready"
    finally:
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(15) == 0
