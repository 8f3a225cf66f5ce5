"""Protocol edges over real sockets (issue 15, items 3-5, 7, 8): interim responses, statuses veil cannot
relay, WebSocket upgrades, an upstream that dribbles, empty 2xx responses. Upstream-side cases run with
both of veil's upstream clients (h1 and aiohttp)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import Upstream, Veil, start_request_veil
from tests.e2e.raw import Raw
from tests.e2e.test_client_bodies import metric, records
from veil.policy.decision import REASONS

CLIENTS = ["h1", "aiohttp"]


@pytest.fixture(scope="module", params=CLIENTS)
def ev(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
       recording: Upstream) -> Iterator[Veil]:
    """One veil per upstream client in front of the recording upstream."""
    from tests.e2e.conftest import REQUEST_LIMITS, REQUEST_POLICY, request_upstream, start_veil

    v = start_veil(tmp_path_factory.mktemp(f"edges-{request.param}") / "veil", recording.url,
                   policy_src=REQUEST_POLICY, overrides={"limits": REQUEST_LIMITS,
                                                         "upstreams": request_upstream(recording.url, request.param)})
    yield v
    v.stop()


def problem(r: object, status: int, reason: str) -> None:
    from tests.e2e.raw import RawResponse

    assert isinstance(r, RawResponse)
    assert r.status == status, (r.status, r.body[:300])
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["reason"] == reason and doc["decision_id"] == r.headers["veil-decision-id"]
    assert (doc["status"], doc["title"]) == REASONS[reason] and r.headers["veil-decision"] == "block"


# ------------------------------------------------------------------ item 3: interim responses
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_interim_responses_from_the_upstream_are_skipped(ev: Veil, method: str) -> None:
    with Raw(ev.url) as c:
        c.send(c.head(method, "/interim/i-1", {"Content-Length": "3"} if method == "POST" else {})
               + (b"a=1" if method == "POST" else b""))
        r = c.response()
        assert r.status == 200 and r.interim == []  # the upstream's 100 and 103 are not relayed
        assert r.json()["id"] == "i-1"


# ------------------------------------------------------------------ item 4: statuses veil cannot relay
@pytest.mark.parametrize("status", ["600", "999", "101", "099", "000"])
def test_a_status_outside_100_599_is_a_502_problem(ev: Veil, status: str) -> None:
    with Raw(ev.url) as c:
        c.send(c.head("GET", f"/status/{status}"))
        problem(c.response(), 502, "upstream_status_invalid")
        c.send(c.head("GET", "/echo/after"))  # the connection to veil stays usable
        assert c.response().status == 200
    log = (ev.dir / "veil.log").read_text()
    assert "Traceback" not in log and "ASGI" not in log


# ------------------------------------------------------------------ item 5: WebSocket upgrades
def test_websocket_upgrade_is_refused_with_a_problem(ev: Veil) -> None:
    with Raw(ev.url) as c:
        c.send(c.head("GET", "/echo/ws", {"Connection": "Upgrade", "Upgrade": "websocket",
                                          "Sec-WebSocket-Version": "13",
                                          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}))
        r = c.response()
        problem(r, 400, "upgrade_refused")
        assert r.headers["connection"] == "close" and c.closed_within(2.0)
    with Raw(ev.url) as c:  # also without a key or a route; nothing reaches the upstream
        c.send(c.head("GET", "/no/such/route", {"Connection": "upgrade", "Upgrade": "WebSocket"}, key=None))
        problem(c.response(), 400, "upgrade_refused")
    log = (ev.dir / "veil.log").read_text()
    assert "Unsupported upgrade" not in log and "Traceback" not in log


def test_h2c_upgrade_offer_is_ignored(ev: Veil) -> None:
    with Raw(ev.url) as c:
        c.send(c.head("GET", "/echo/h2c", {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
                                           "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}))
        r = c.response()
        assert r.status == 200
        seen = r.json()["headers"]
        assert "upgrade" not in seen and "http2-settings" not in seen


# ------------------------------------------------------------------ item 7: the total upstream deadline
def test_an_upstream_dribbling_a_byte_at_a_time_is_cut_off(ev: Veil) -> None:
    """One byte every 0.2 s never trips the 1 s between-reads timeout; the 2.5 s total deadline does."""
    with Raw(ev.url) as c:
        t0 = time.monotonic()
        c.send(c.head("GET", "/dribble/d-1"))
        r = c.response(timeout=15.0)
        took = time.monotonic() - t0
        problem(r, 504, "upstream_timeout")
        assert 2.3 < took < 5.0, took


# ------------------------------------------------------------------ item 8: empty 2xx responses
@pytest.mark.parametrize("status", [200, 201, 202, 203, 204, 205])
@pytest.mark.parametrize("ctype", ["1", "0"])
def test_empty_2xx_responses_pass_empty(ev: Veil, status: int, ctype: str) -> None:
    """An empty 2xx discloses nothing: it passes with its status, an empty body, no content type and
    decision allow; an empty 201 keeps its Location."""
    with Raw(ev.url) as c:
        c.send(c.head("POST", f"/empty/{status}?ctype={ctype}", {"Content-Length": "2"}) + b"{}")
        r = c.response()
        assert r.status == status, r.body[:300]
        assert r.body == b"" and "content-type" not in r.headers
        assert r.headers["veil-decision"] == "allow"
        if status == 201:
            assert r.headers["location"] == "/echo/new"


def test_an_encoded_empty_body_is_empty(ev: Veil) -> None:
    with Raw(ev.url) as c:
        c.send(c.head("GET", "/gzipempty/202"))
        r = c.response()
        assert r.status == 202 and r.body == b"" and r.headers["veil-decision"] == "allow"
        assert "content-encoding" not in r.headers


def test_empty_responses_are_recorded_as_allow(veil_factory: Callable[..., Veil], recording: Upstream) -> None:
    v = start_request_veil(veil_factory, "empty-log", recording.url)
    with Raw(v.url) as c:
        c.send(c.head("GET", "/empty/201"))
        assert c.response().status == 201
    assert metric(v, r'veil_requests_total\{decision="allow",purpose="support.lookup",reason="ok",'
                     r'route="/empty/\{code\}"\}') == 1
    v.stop()
    rec = [r for r in records(v) if r.get("route") == "/empty/{code}"]
    assert len(rec) == 1 and rec[0]["decision"] == "allow" and rec[0]["fields"] == {
        "removed": [], "dropped": [], "transformed": []}
