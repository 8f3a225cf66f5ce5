"""`veil serve` with two worker processes sharing the ports (SO_REUSEPORT): /metrics on any worker
adds up all of them, SIGHUP and POST /reload reach every worker, each worker writes its own decision-log chain and
`veil audit verify` checks all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import KEYS, Upstream, Veil, start_veil
from tests.e2e.test_metrics import fresh_start_series
from veil import metrics

REQUESTS = 200


def requests_total(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "veil_requests_total")


def reloads_ok(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "veil_policy_reloads_total" and s.labels.get("result") == "ok")


@pytest.fixture
def workers_veil(tmp_path: Path, demo_upstream: Upstream) -> Iterator[Veil]:
    v = start_veil(tmp_path / "veil", demo_upstream.url, overrides={"workers": 2})
    yield v
    v.stop()


def test_two_workers_share_ports_metrics_and_verify(workers_veil: Veil) -> None:
    v = workers_veil
    # before any traffic: the error series are there at 0 in the aggregate too, and process_* covers
    # every worker and the supervisor
    deadline = time.monotonic() + 30.0
    while True:  # a worker registers for process_* once it runs: on a loaded machine one may still start
        first = v.metrics()
        samples = [s for f in text_string_to_metric_families(first) for s in f.samples]
        started = {s.labels.get("worker") for s in samples if s.name == "process_cpu_seconds_total"}
        # and each worker has installed its policy (the gauge is set once the policy is in place)
        loaded = any(s.name == "veil_policy_last_reload_successful" and s.value == 1 for s in samples)
        if (started >= {"w0", "w1", "supervisor"} and loaded) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    fresh = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(first) for s in f.samples}
    for name, labels in fresh_start_series({}):
        if labels.get("upstream") == "unreachable":
            continue  # no such upstream here
        assert fresh.get((name, tuple(sorted(labels.items())))) == 0, f"{name}{labels}"
    cpu = {dict(labels)["worker"] for (name, labels) in fresh if name == "process_cpu_seconds_total"}
    assert cpu == {"w0", "w1", "supervisor"}
    assert fresh[("veil_policy_last_reload_successful", ())] == 1
    headers = {"Veil-Key": KEYS["warehouse"], "Veil-Purpose": "orders.fulfillment", "Connection": "close"}
    statuses: dict[int, int] = {}
    # a new connection per request: the kernel spreads connections, not requests, over the workers
    with httpx.Client(timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for i in range(REQUESTS):
            r = c.get(f"{v.url}/customers/c-{i % 1000:06d}", headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        # each worker adds its counts to the shared files at most Tally.FLUSH_INTERVAL after a request
        time.sleep(metrics.Tally.FLUSH_INTERVAL + 0.5)
        scrapes = [c.get(f"{v.admin}/metrics", headers={"Connection": "close"}).text for _ in range(4)]
    assert statuses == {200: REQUESTS}
    assert [requests_total(s) for s in scrapes] == [REQUESTS] * 4  # whichever worker answers
    assert "c-000001" not in scrapes[0]

    v.proc.send_signal(signal.SIGHUP)  # forwarded by the parent: every worker reloads its policy
    deadline = time.monotonic() + 10.0
    while reloads_ok(v.metrics()) < 2:
        assert time.monotonic() < deadline, "SIGHUP did not reach both workers"
        time.sleep(0.1)
    r = v.client.post(f"{v.admin}/reload", headers={"Authorization": f"Bearer {v.tokens['reload']}"})
    assert r.status_code == 200 and r.json()["ok"] is True
    # the worker that took the request reloads at once, then with its sibling through the parent's SIGHUP
    while reloads_ok(v.metrics()) < 5:
        assert time.monotonic() < deadline + 10.0, "POST /reload did not reach both workers"
        time.sleep(0.1)
    assert v.proc.poll() is None

    log = v.stop()
    assert v.proc.returncode == 0, log[-3000:]
    audit = v.dir / "audit"
    assert sorted(p.name for p in audit.glob("decisions*.log")) == ["decisions-w0.log", "decisions-w1.log"]
    per_worker = []
    for name in ("decisions-w0.log", "decisions-w1.log"):
        lines = (audit / name).read_bytes().splitlines()
        assert orjson.loads(lines[-1])["reason"] == "close"
        per_worker.append(sum(1 for x in lines if orjson.loads(x).get("decision") == "redact"))
    assert sum(per_worker) == REQUESTS and min(per_worker) > 0, per_worker
    run = subprocess.run([sys.executable, "-m", "veil", "audit", "verify", str(audit),
                          "--key", f"file:{v.dir / 'audit.key'}"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"\nworkers: {per_worker} requests per worker; verify: {run.stdout.strip()}")


def worker_pids(v: Veil) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    out = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(v.proc.pid)], capture_output=True,
                         text=True)
    return sorted(int(line.split()[0]) for line in out.stdout.splitlines() if "spawn_main" in line)


def test_readiness_answers_for_every_worker(tmp_path: Path, demo_upstream: Upstream) -> None:
    """/readyz on any worker reports the whole veil: a worker that cannot answer (stopped with
    SIGSTOP) makes it not ready, whichever worker takes the probe; details need the read token."""
    v = start_veil(tmp_path / "veil", demo_upstream.url, overrides={"workers": 2}, read_token=True,
                   wait="/readyz", ready_timeout=60.0)
    try:
        assert v.readyz().json() == {"status": "ready", "reasons": [], "mode": "enforce"}
        details = v.readyz(details=True).json()
        assert [w["worker"] for w in details["workers"]] == ["w0", "w1"]
        assert all(w["answered"] and w["checks"]["consent_store"] for w in details["workers"])
        assert v.client.get(f"{v.admin}/readyz", headers={"Authorization": "Bearer nope"}).status_code == 403
        pids = worker_pids(v)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGSTOP)
        try:
            answers = []
            with httpx.Client(timeout=2.0, limits=httpx.Limits(max_keepalive_connections=0)) as c:
                while len(answers) < 3:  # connections the kernel gives the stopped worker time out
                    try:
                        answers.append(c.get(f"{v.admin}/readyz"))
                    except httpx.TimeoutException:
                        continue
            for r in answers:
                assert r.status_code == 503 and r.json() == {
                    "status": "not_ready", "reasons": ["worker_unavailable"], "mode": "enforce"}, r.text
        finally:
            os.kill(pids[0], signal.SIGCONT)
        deadline = time.monotonic() + 10
        while v.readyz().status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        v.stop()
