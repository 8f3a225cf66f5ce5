"""Header policy: what veil forwards to the upstream and what it sends back.

Stripped towards the upstream: hop-by-hop headers (and those `Connection` lists), `Veil-*`, method
overrides, `Expect` (veil reads the body itself and answers `100 Continue` to the client), client-sent
forwarding headers (`X-Forwarded-*`, `Forwarded`, and path overrides such as `X-Original-URL`) and
client-address headers (`X-Real-IP`, `True-Client-IP`, ...); on enforced routes also `Range`,
validators and `Accept-Encoding` (veil asks for identity). veil sets `X-Forwarded-For`,
`X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Real-IP` itself (veil.proxy.forwarded says which
client address that is behind trusted proxies). Dropped from responses: validators and digests that
describe the unredacted body, hop-by-hop headers, and what veil sets itself.
"""

from __future__ import annotations

from veil.policy.compile import CompiledPolicy
from veil.proxy.asgi import Scope
from veil.proxy.forwarded import CHAIN, HOST, PROTO

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-connection",
})
OVERRIDE = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# Request headers never forwarded on enforced routes (a range or a validator would let the upstream
# answer about bytes veil has not enforced).
STRIP_ENFORCED = frozenset({"range", "if-range", "if-none-match", "if-modified-since", "if-match",
                            "if-unmodified-since", "accept-encoding"})
# Response headers that describe the unredacted body, or that veil sets itself.
DROP_RESPONSE = frozenset({
    "content-length", "content-encoding", "etag", "content-md5", "digest", "last-modified",
    "accept-ranges", "content-range", "content-type", "vary", "cache-control", "repr-digest",
    "content-digest", "server", "date",
})
VARY = b"Veil-Purpose, Veil-Key, Sec-GPC, Cookie"
# Request headers veil never forwards as received: it sets the forwarding headers itself, and the
# others would let a client claim an address or a path other than the one veil saw and matched.
FORWARDING = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix",
    "x-forwarded-server", "x-forwarded-path", "forwarded", "x-original-forwarded-for",
    "x-real-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip", "fastly-client-ip", "x-cluster-client-ip",
    "x-original-url", "x-rewrite-url", "expect",
})


def forward_headers(scope: Scope, headers: list[tuple[bytes, bytes]], *, enforced: bool
                     ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    connection_listed: set[str] = set()
    host = ""
    for name, value in headers:
        if name == b"connection":
            connection_listed.update(t.strip().lower() for t in value.decode("latin-1").split(","))
    for name, value in headers:
        n = name.decode("latin-1")
        if n in HOP_BY_HOP or n in connection_listed or n.startswith("veil-") or n in OVERRIDE:
            continue
        if n == "host":
            host = value.decode("latin-1")
            continue
        if n == "content-length" and scope["method"] in ("GET", "HEAD"):
            continue
        if enforced and n in STRIP_ENFORCED:
            continue
        if n in FORWARDING:
            continue
        out.append((n, value.decode("latin-1")))
    client = scope.get("client")
    address = client[0] if client else "unknown"
    chain = scope.get(CHAIN)
    out.append(("x-forwarded-for", ", ".join(chain) if chain else address))
    out.append(("x-real-ip", address))
    out.append(("x-forwarded-proto", scope.get(PROTO) or scope.get("scheme", "http")))
    host = scope.get(HOST) or host
    if host:
        out.append(("x-forwarded-host", host))
    if enforced:
        out.append(("accept-encoding", "identity"))
    return out


def response_headers(upstream: list[tuple[str, str]], policy: CompiledPolicy, decision: str,
                      decision_id: str) -> list[tuple[bytes, bytes]]:
    out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in upstream
           if k.lower() not in DROP_RESPONSE and k.lower() not in HOP_BY_HOP
           and not k.lower().startswith("veil-")]
    out += [
        (b"veil-decision", decision.encode()),
        (b"veil-decision-id", decision_id.encode()),
        (b"veil-policy", policy.version.encode()),
        (b"vary", VARY),
        (b"cache-control", b"private, no-store" if decision == "block" else b"private"),
    ]
    return out

