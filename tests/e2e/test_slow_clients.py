"""Slow and idle clients over real sockets (issue 15, item 2): stalled bodies, slow headers (slowloris),
idle connections and an exhausted upstream pool never make other clients wait; each stalled client
is cut off at its deadline with a reason."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Upstream, Veil, start_request_veil, upstream_log
from tests.e2e.raw import KEY, PURPOSE, Raw, chunk
from tests.e2e.test_client_bodies import metric

H = {"Veil-Key": KEY, "Veil-Purpose": PURPOSE}


def timed(fn: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


@pytest.mark.slow
def test_stalled_clients_do_not_starve_the_others(veil_factory: Callable[..., Veil], recording: Upstream) -> None:
    """30 authenticated chunked POSTs that stall after their first chunk, 20 slowloris heads (one of
    them dribbling a byte every 0.3 s), 10 silent connections, against an upstream pool of 4: a
    normal client is served at once on every route, the upstream never sees the stalled requests,
    and each stalled connection is cut off at its deadline (408 request_timeout, then closed)."""
    v = start_request_veil(veil_factory, "stalls", recording.url, limits={
        "request_header_timeout": 4.0, "request_body_idle_timeout": 4.0, "request_body_timeout": 8.0})
    bodies, heads, idle = [], [], []
    t_start = time.monotonic()
    for i in range(30):
        c = Raw(v.url)
        c.send(c.head("POST", f"/echo/stalled-{i}", {"Transfer-Encoding": "chunked"}) + chunk(b"amount=1000"))
        bodies.append(c)
    for i in range(20):
        c = Raw(v.url)
        c.send(f"POST /echo/loris-{i} HTTP/1.1\r\nHost: veil.test\r\nVeil-Key: {KEY}\r\n".encode())
        heads.append(c)
    for _ in range(10):
        idle.append(Raw(v.url))
    stop = threading.Event()

    def dribble(c: Raw) -> None:  # a header line that never ends, one byte at a time
        c.send(b"X-Slow: ")
        while not stop.is_set():
            try:
                c.send(b"a")
            except OSError:
                return
            stop.wait(0.3)

    dribbler = threading.Thread(target=dribble, args=(heads[0],), daemon=True)
    dribbler.start()
    try:
        time.sleep(0.5)
        with httpx.Client(timeout=10.0) as normal:
            worst = 0.0
            for i in range(10):
                r, dt = timed(lambda i=i: normal.get(f"{v.url}/echo/ok-{i}", headers=H))
                assert r.status_code == 200, r.text
                worst = max(worst, dt)
                r, dt = timed(lambda i=i: normal.post(f"{v.url}/echo/post-{i}", headers=H, content=b"a=1"))
                assert r.status_code == 200 and r.json()["body"] == "a=1"
                worst = max(worst, dt)
                r, dt = timed(lambda i=i: normal.get(f"{v.url}/hold/h-{i}?s=0", headers=H))
                assert r.status_code == 200
                worst = max(worst, dt)
        assert worst < 2.0, f"a normal request waited {worst:.2f}s behind stalled clients"
        assert time.monotonic() - t_start < 4.0  # all of that happened before any stalled client was cut off
        seen = [r["target"] for r in upstream_log(recording)]
        assert not any("stalled" in t or "loris" in t for t in seen)  # stalled requests never got upstream
        for c in bodies:  # each stalled body: 408 with the reason, then the connection is closed
            r = c.response(timeout=10.0)
            assert r.status == 408 and r.json()["reason"] == "request_timeout"
            assert c.closed_within(6.0)
        for c in heads + idle:
            assert c.closed_within(6.0)
        assert time.monotonic() - t_start < 16.0
        assert metric(v, r'veil_client_errors_total\{listener="proxy",reason="header_timeout"\}') >= 30
        assert metric(v, r'veil_requests_total\{decision="block",purpose="support.lookup",'
                         r'reason="request_timeout",route="/echo/\{id\}"\}') == 30
    finally:
        stop.set()
        for c in bodies + heads + idle:
            c.close()


@pytest.mark.parametrize("client", ["h1", "aiohttp"])
def test_a_full_upstream_pool_answers_503_then_recovers(veil_factory: Callable[..., Veil], recording: Upstream,
                                                        client: str) -> None:
    """Streamed bodies (over the read-ahead buffer) that stall hold an upstream connection each, but only
    until their idle deadline; meanwhile a request that finds no free connection within pool_timeout
    gets 503 upstream_busy rather than a hang."""
    v = start_request_veil(veil_factory, f"pool-{client}", recording.url, client,
                           upstream={"pool_size": 2, "pool_timeout": 0.5},
                           limits={"request_body_idle_timeout": 2.0, "request_body_timeout": 5.0})
    holders = []
    for i in range(2):
        c = Raw(v.url)
        c.send(c.head("POST", f"/echo/holder-{client}-{i}", {"Transfer-Encoding": "chunked"}) + chunk(b"h" * 5000))
        holders.append(c)
    try:
        time.sleep(0.4)
        r, dt = timed(lambda: httpx.get(f"{v.url}/echo/waiting", headers=H, timeout=10.0))
        assert r.status_code == 503 and r.json()["reason"] == "upstream_busy", r.text
        assert 0.4 < dt < 2.0
        for c in holders:
            r2 = c.response(timeout=10.0)
            assert r2.status == 408 and r2.json()["reason"] == "request_timeout"
        r = httpx.get(f"{v.url}/echo/after", headers=H, timeout=10.0)
        assert r.status_code == 200
        held = [x for x in upstream_log(recording) if f"holder-{client}" in x["target"]]
        assert len(held) == 2 and not any(x["complete"] for x in held)  # aborted, never completed
        assert metric(v, r'veil_upstream_errors_total\{kind="pool",upstream="demo"\}') == 1
    finally:
        for c in holders:
            c.close()


def test_idle_connections_and_unread_bodies_are_bounded(veil_factory: Callable[..., Veil],
                                                        recording: Upstream) -> None:
    v = start_request_veil(veil_factory, "idle", recording.url)
    with Raw(v.url) as c:  # a connection that never sends: closed at the head deadline (1 s), silently
        t0 = time.monotonic()
        assert c.closed_within(4.0) and c.buf == b""
        assert time.monotonic() - t0 >= 0.9
    with Raw(v.url) as c:  # after a response, an idle keep-alive connection: closed after 2 s
        c.send(c.head("GET", "/echo/ka"))
        assert c.response().status == 200
        assert c.closed_within(4.0)
    with Raw(v.url) as c:  # part of a head: 408 with the reason, then closed
        c.send(b"GET /echo/partial HTTP/1.1\r\nHost: x\r\n")
        r = c.response(timeout=4.0)
        assert r.status == 408 and r.json()["reason"] == "request_timeout"
        assert r.headers["connection"] == "close" and c.closed_within(2.0)
    with Raw(v.url) as c:  # blocked before its body was read; the body then finishes: the connection is reused
        c.send(c.head("POST", "/echo/blocked", {"Content-Length": "6000"}, key="wrong") + b"b" * 1000)
        r = c.response()
        assert r.status == 401
        c.send(b"b" * 5000)
        c.send(c.head("GET", "/echo/next"))
        assert c.response().status == 200
    with Raw(v.url) as c:  # blocked, and the rest of the body never comes: closed after the body deadline
        c.send(c.head("POST", "/echo/blocked2", {"Content-Length": "6000"}, key="wrong") + b"b" * 1000)
        assert c.response().status == 401
        t0 = time.monotonic()
        assert c.closed_within(4.0)
        assert time.monotonic() - t0 >= 0.5
    assert metric(v, r'veil_client_errors_total\{listener="proxy",reason="body_discard_timeout"\}') == 1


def test_oversized_request_heads(veil_factory: Callable[..., Veil], recording: Upstream) -> None:
    """Over 32 KiB of headers: a recorded block (431 headers_too_large); over 64 KiB (measured per
    read) the protocol refuses the head before the app sees it, with the same reason, and closes the
    connection."""
    v = start_request_veil(veil_factory, "heads", recording.url)
    with Raw(v.url) as c:
        c.send(c.head("GET", "/echo/big", {"X-Big": "a" * 40_000}))
        r = c.response()
        assert r.status == 431 and r.json()["reason"] == "headers_too_large" and "veil-policy" in r.headers
    with Raw(v.url) as c:  # a head arriving over several reads is measured as it comes
        head = c.head("GET", "/echo/huge", {f"X-H{i}": "a" * 8000 for i in range(10)})
        with contextlib.suppress(OSError):
            for i in range(0, len(head), 8192):
                c.send(head[i:i + 8192])
                time.sleep(0.02)
        r = c.response()
        assert r.status == 431 and r.json()["reason"] == "headers_too_large"
        assert c.closed_within(2.0)
    with Raw(v.url) as c:  # a request line that never ends
        with contextlib.suppress(OSError):
            c.send(b"GET /" + b"a" * 200_000)
        r = c.response()
        assert r.status == 431
    assert metric(v, r'veil_client_errors_total\{listener="proxy",reason="header_too_large"\}') == 2
    assert not any("huge" in x["target"] for x in upstream_log(recording))
