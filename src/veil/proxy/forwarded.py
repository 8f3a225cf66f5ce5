"""The client address behind trusted proxies (`trusted_proxies` in veil.yaml).

veil believes `X-Forwarded-For` only from a peer in `trusted_proxies` (a list of networks; empty by
default: the TCP peer is the client). From such a peer the chain is read right to left, skipping
addresses that are themselves trusted proxies; the first one that is not is the client (all
trusted: the leftmost). An entry that is not an IP address ends the walk: the client is then the
trusted proxy that reported it. Entries left of the client were written by the client itself and
are ignored. This is the address the failed-authentication limiter counts and the decision log
records (`scope["client"]` is rewritten), and what the upstream receives:

    X-Forwarded-For: <client>, <trusted proxies walked...>, <peer>
    X-Real-IP: <client>

`X-Forwarded-Proto` and `X-Forwarded-Host` from a trusted peer are passed on (their last value: the
proxy in front knows the original scheme and host); from anyone else veil sets its own. Other client-address
headers (`X-Real-IP`, `True-Client-IP`, ...) are never read and never forwarded as received
(veil.proxy.headers): one mechanism, one answer.

    ForwardedFor(app, ["10.0.0.0/8"])   # pure ASGI middleware; a no-op list is not wrapped at all
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CHAIN = "veil.forwarded_for"  # scope key: [client, ..., peer], what the upstream's X-Forwarded-For lists
PROTO = "veil.forwarded_proto"  # scope key: X-Forwarded-Proto from a trusted peer
HOST = "veil.forwarded_host"  # scope key: X-Forwarded-Host from a trusted peer
MAX_HOPS = 32  # a longer chain is read only this far (right to left)


def parse_address(text: str) -> Address | None:
    """An X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (IPv6 has at least two colons)
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, addr: Address | None) -> bool:
        return addr is not None and any(addr in net for net in self.networks)

    def resolve(self, peer: str, forwarded_for: list[str]) -> list[str]:
        """[client, trusted hops..., peer]: the chain as far as it can be believed (just [peer]
        when the peer is not trusted)."""
        if not self.trusts(parse_address(peer)):
            return [peer]
        entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
        chain = [peer]
        for entry in reversed(entries[-MAX_HOPS:]):
            addr = parse_address(entry)
            if addr is None:
                break  # garbage from a trusted proxy: the client is that proxy
            chain.append(str(addr))
            if not self.trusts(addr):
                break
        chain.reverse()
        return chain


class ForwardedFor:
    """Pure ASGI middleware: rewrites `scope["client"]` to the resolved client address and leaves
    the believed chain (and a trusted peer's X-Forwarded-Proto/-Host) in the scope for the headers
    sent upstream."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("client"):
            peer = scope["client"][0]
            if self.trusted.trusts(parse_address(peer)):
                xff: list[str] = []
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        xff.append(value.decode("latin-1"))
                    elif name == b"x-forwarded-proto":
                        scope[PROTO] = value.decode("latin-1").split(",")[-1].strip()  # the nearest proxy's
                    elif name == b"x-forwarded-host":
                        scope[HOST] = value.decode("latin-1").split(",")[-1].strip()
                chain = self.trusted.resolve(peer, xff)
                scope[CHAIN] = chain
                if len(chain) > 1:
                    scope["client"] = (chain[0], 0)
        await self.app(scope, receive, send)
