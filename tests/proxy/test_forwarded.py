"""Which client address veil believes behind trusted proxies (veil.proxy.forwarded)."""

from __future__ import annotations

from typing import Any

import pytest

from veil.proxy.forwarded import CHAIN, ForwardedFor, TrustedProxies, parse_address

TRUSTED = TrustedProxies(["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"])


@pytest.mark.parametrize("text,expected", [
    ("1.2.3.4", "1.2.3.4"), (" 1.2.3.4 ", "1.2.3.4"), ("1.2.3.4:5678", "1.2.3.4"), ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"), ("::ffff:10.1.2.3", "10.1.2.3"), ("unknown", None), ("", None),
    ("1.2.3", None), ("_hidden", None), ("1.2.3.4, 5.6.7.8", None),
])
def test_parse_address(text: str, expected: str | None) -> None:
    got = parse_address(text)
    assert (str(got) if got is not None else None) == expected


@pytest.mark.parametrize("peer,xff,chain", [
    ("203.0.113.1", ["198.51.100.7"], ["203.0.113.1"]),  # untrusted peer: its header is not read
    ("10.0.0.5", [], ["10.0.0.5"]),  # trusted peer, no header: the peer is the client
    ("10.0.0.5", ["198.51.100.7"], ["198.51.100.7", "10.0.0.5"]),
    ("10.0.0.5", ["6.6.6.6, 198.51.100.7"], ["198.51.100.7", "10.0.0.5"]),  # spoofed left entries ignored
    ("10.0.0.5", ["198.51.100.7, 10.9.9.9", "192.0.2.1"], ["198.51.100.7", "10.9.9.9", "192.0.2.1", "10.0.0.5"]),
    ("10.0.0.5", ["10.1.1.1, 10.2.2.2"], ["10.1.1.1", "10.2.2.2", "10.0.0.5"]),  # all trusted: the leftmost
    ("10.0.0.5", ["198.51.100.7, garbage"], ["10.0.0.5"]),  # garbage: the hop that reported it
    ("10.0.0.5", ["[2001:db9::7]:1234"], ["2001:db9::7", "10.0.0.5"]),
    ("10.0.0.5", [" , ,198.51.100.7"], ["198.51.100.7", "10.0.0.5"]),
])
def test_resolve(peer: str, xff: list[str], chain: list[str]) -> None:
    assert TRUSTED.resolve(peer, xff) == chain


def test_a_long_chain_is_read_only_so_far() -> None:
    chain = TRUSTED.resolve("10.0.0.5", [", ".join(["10.0.0.1"] * 1000)])
    assert len(chain) <= 33


async def test_middleware_rewrites_the_client_for_trusted_peers_only() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(dict(scope))

    mw = ForwardedFor(app, TRUSTED)
    headers = [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-proto", b"http, https")]
    await mw({"type": "http", "client": ("10.0.0.5", 4242), "headers": headers}, None, None)
    await mw({"type": "http", "client": ("203.0.113.1", 4242), "headers": headers}, None, None)
    assert seen[0]["client"] == ("198.51.100.7", 0) and seen[0][CHAIN] == ["198.51.100.7", "10.0.0.5"]
    assert seen[0]["veil.forwarded_proto"] == "https"
    assert seen[1]["client"] == ("203.0.113.1", 4242) and CHAIN not in seen[1]
    assert not TrustedProxies([])
