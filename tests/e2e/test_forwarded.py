"""The client address behind a load balancer (issue 15, item 6), over real sockets: `trusted_proxies`
decides whose X-Forwarded-For veil believes; the failed-authentication limiter counts that address,
and the upstream receives the chain veil believes plus X-Real-IP. Both sides: a trusted peer (the test
client plays the balancer on 127.0.0.1) and an untrusted one (spoofed headers change nothing)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.e2e.conftest import Upstream, Veil, start_request_veil
from tests.e2e.raw import KEY, PURPOSE
from tests.e2e.test_client_bodies import records

H = {"Veil-Key": KEY, "Veil-Purpose": PURPOSE}
BAD = {"Veil-Key": "not-a-key", "Veil-Purpose": PURPOSE}


def get(v: Veil, headers: dict[str, str], path: str = "/echo/c-1") -> httpx.Response:
    return httpx.get(v.url + path, headers=headers, timeout=10.0)


def test_behind_a_trusted_balancer_each_client_has_its_own_limit(veil_factory: Callable[..., Veil],
                                                                 recording: Upstream) -> None:
    v = start_request_veil(veil_factory, "trusted", recording.url, limits={"auth_failures_per_minute": 3},
                           trusted_proxies=["127.0.0.1/32", "10.0.0.0/8"])
    for _ in range(3):  # three bad keys from one client behind the balancer
        r = get(v, {**BAD, "X-Forwarded-For": "203.0.113.5"})
        assert r.status_code == 401
    assert get(v, {**H, "X-Forwarded-For": "203.0.113.5"}).status_code == 429  # that client is locked out
    ok = get(v, {**H, "X-Forwarded-For": "203.0.113.6"})  # everyone else is not
    assert ok.status_code == 200, ok.text
    seen = ok.json()["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.6, 127.0.0.1" and seen["x-real-ip"] == "203.0.113.6"
    # a client's own X-Forwarded-For entries left of what the trusted hops report are not believed;
    # the walk skips trusted hops (10.x is another balancer) and stops at the first untrusted address
    ok = get(v, {**H, "X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.2.3"})
    seen = ok.json()["headers"]
    assert seen["x-forwarded-for"] == "203.0.113.7, 10.1.2.3, 127.0.0.1" and seen["x-real-ip"] == "203.0.113.7"
    # the balancer's scheme and host reach the upstream
    ok = get(v, {**H, "X-Forwarded-For": "203.0.113.8", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "api.example"})
    seen = ok.json()["headers"]
    assert seen["x-forwarded-proto"] == "https" and seen["x-forwarded-host"] == "api.example"
    # garbage in the chain: the client is the trusted hop that reported it
    ok = get(v, {**H, "X-Forwarded-For": "203.0.113.9, not-an-address"})
    assert ok.json()["headers"]["x-real-ip"] == "127.0.0.1"
    v.stop()
    blocks = [r for r in records(v) if r.get("reason") == "unknown_caller"]
    assert len(blocks) == 3


def test_an_untrusted_peer_cannot_choose_its_address(veil_factory: Callable[..., Veil],
                                                     recording: Upstream) -> None:
    v = start_request_veil(veil_factory, "untrusted", recording.url, limits={"auth_failures_per_minute": 3},
                           trusted_proxies=["10.0.0.0/8"])
    for i in range(3):  # a different X-Forwarded-For each time: still one address, the TCP peer
        assert get(v, {**BAD, "X-Forwarded-For": f"203.0.113.{i}", "X-Real-IP": f"198.51.100.{i}"}).status_code == 401
    assert get(v, {**H, "X-Forwarded-For": "203.0.113.99"}).status_code == 429


def test_without_trusted_proxies_client_address_headers_never_reach_the_upstream(
        veil_factory: Callable[..., Veil], recording: Upstream) -> None:
    v = start_request_veil(veil_factory, "plain", recording.url)
    r = get(v, {**H, "X-Forwarded-For": "1.2.3.4", "X-Real-IP": "1.2.3.4", "True-Client-IP": "1.2.3.4",
                "CF-Connecting-IP": "1.2.3.4", "X-Client-IP": "1.2.3.4", "Forwarded": "for=1.2.3.4",
                "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
                "X-Original-URL": "/admin", "X-Rewrite-URL": "/admin"})
    assert r.status_code == 200
    seen = r.json()["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"].startswith("127.0.0.1:")
    for h in ("true-client-ip", "cf-connecting-ip", "x-client-ip", "forwarded", "x-original-url", "x-rewrite-url"):
        assert h not in seen
    assert "1.2.3.4" not in str(seen) and "evil.example" not in str(seen)
