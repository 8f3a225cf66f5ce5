"""The load generator and the bench servers, against real processes on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from veil.bench.loadgen import LoadError, LoadSpec, parse_wrk, percentile, run_load
from veil.bench.servers import (
    Server,
    cpu_seconds,
    descendants,
    fast_profile,
    start_fast_upstream,
    start_proxy,
)

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:40000/customers/c-000001
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   410.12us  120.55us   3.10ms   90.12%
    Req/Sec    38.10k     1.20k   40.00k    80.00%
  Latency Distribution
     50%  380.00us
     75%  450.00us
     90%  520.00us
     99%    1.21ms
  38100 requests in 1.00s, 45.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  38100.00
Transfer/sec:     45.10MB
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Server]:
    with start_fast_upstream() as server:
        yield server


def test_builtin_loadgen_against_the_fast_upstream(upstream: Server) -> None:
    calls: list[float] = []
    spec = LoadSpec(f"{upstream.url}/customers/c-000001", duration=1.0, connections=8,
                    headers=(("Veil-Key", "k"), ("Veil-Purpose", "p")), warmup=0.2)
    result = run_load(spec, "builtin", on_measure=lambda: calls.append(cpu_seconds(upstream.pids())))
    assert len(calls) == 1
    assert result.tool == "builtin"
    assert result.requests > 0 and result.rps > 0
    assert 0.9 <= result.seconds <= 3.0
    assert 0 < result.p50_ms <= result.p99_ms
    assert result.non_2xx == 0 and result.errors == 0
    assert cpu_seconds(upstream.pids()) >= calls[0]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not on PATH")
def test_wrk_against_the_fast_upstream(upstream: Server) -> None:
    result = run_load(LoadSpec(f"{upstream.url}/customers", duration=1.0, connections=4), "wrk")
    assert result.tool == "wrk"
    assert result.requests > 0 and result.rps > 0
    assert 0 < result.p50_ms <= result.p99_ms


def test_parse_wrk_output() -> None:
    r = parse_wrk(WRK_OUTPUT)
    assert (r.requests, r.non_2xx, r.errors) == (38100, 7, 3)
    assert r.seconds == pytest.approx(1.0)
    assert r.rps == pytest.approx(38100)
    assert r.p50_ms == pytest.approx(0.38)
    assert r.p99_ms == pytest.approx(1.21)
    with pytest.raises(LoadError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_targets_must_be_on_loopback() -> None:
    for url in ("http://10.0.0.1/", "http://example.com/", "http://192.168.1.1:8080/x"):
        with pytest.raises(LoadError, match="loopback"):
            run_load(LoadSpec(url, 1.0), "builtin")


def test_bad_spec_and_tool_are_refused(upstream: Server) -> None:
    with pytest.raises(LoadError):
        run_load(LoadSpec(upstream.url, 0.0), "builtin")
    with pytest.raises(LoadError):
        run_load(LoadSpec(upstream.url, 1.0), "ab")


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0


def test_cpu_accounting_follows_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    busy = cpu_seconds([os.getpid()])
    sum(i * i for i in range(300_000))
    assert cpu_seconds([os.getpid()]) >= busy
    assert cpu_seconds([2**22 + 12345]) == 0.0  # no such process


def test_fast_upstream_and_proxies_serve_the_fixed_bodies(upstream: Server) -> None:
    profile = fast_profile()
    with httpx.Client(timeout=10) as client:
        one = client.get(f"{upstream.url}/customers/anything")
        listing = client.get(f"{upstream.url}/customers?limit=5")
        assert one.json() == profile
        assert 800 <= len(one.content) <= 1500
        assert len(listing.json()["items"]) == 1000
        assert 0.8e6 <= len(listing.content) <= 1.6e6
    kinds = (("aiohttp", False), ("httpx", False), ("aiohttp", True))
    with ThreadPoolExecutor(3) as pool:
        proxies = list(pool.map(lambda k: start_proxy(upstream.url, client=k[0], parse=k[1]), kinds))
    try:
        with httpx.Client(timeout=10) as client:
            for proxy in proxies:
                via = client.get(f"{proxy.url}/customers/c-000001", headers={"Veil-Key": "k"})
                assert via.status_code == 200
                assert via.json() == profile
                assert via.headers["content-type"] == "application/json"
    finally:
        for proxy in proxies:
            proxy.stop()
    assert not any(proxy.alive() for proxy in proxies)
