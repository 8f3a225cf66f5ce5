"""The client certificate of a TLS connection, handed to the app as the ASGI TLS extension.

uvicorn does not put the peer certificate into the scope. `TLSInfoProtocol` is veil's HTTP protocol
class (uvicorn's httptools protocol with deadlines, veil.proxy.h1server) with one addition: when a
connection is made (asyncio calls `connection_made` after the TLS handshake) it reads the verified
peer certificate from the transport and wraps the app *for that connection* so that every request
scope carries

    scope["extensions"]["tls"] = {"client_cert_name": "CN=storefront,O=Acme", "tls_version": ...}

`client_cert_name` follows the ASGI TLS extension: the subject as an RFC 4514 string, most specific
RDN first (the reverse of the certificate's ASN.1 order), short attribute names (CN, O, OU, L, ST, C,
DC, UID, STREET; others by their long name), special characters escaped with a backslash. It is
None when the client sent no certificate. A policy maps it to a caller with `cert "CN=...,O=..."`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from veil.proxy.h1server import GuardedHTTPProtocol

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

SHORT_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "localityName": "L",
    "stateOrProvinceName": "ST", "countryName": "C", "domainComponent": "DC", "userId": "UID",
    "streetAddress": "STREET",
}
TLS_VERSIONS = {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303, "TLSv1.1": 0x0302, "TLSv1": 0x0301}
_SPECIAL = set(',+"\\<>;')


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in _SPECIAL else ("\\00" if c == "\0" else c) for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def rfc4514_name(subject: Any) -> str:
    """`ssl.SSLSocket.getpeercert()["subject"]` → 'CN=storefront,O=Acme,C=DE'."""
    rdns = []
    for rdn in subject:
        parts = [f"{SHORT_NAMES.get(str(attr), str(attr))}={_escape(str(value))}" for attr, value in rdn]
        rdns.append("+".join(parts))
    return ",".join(reversed(rdns))


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection, or None on a plain-TCP connection."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()  # {} or None unless the certificate was verified
    name = rfc4514_name(cert["subject"]) if cert and cert.get("subject") else None
    der = ssl_object.getpeercert(binary_form=True) if name else None
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
    }


class _WithTLS:
    """Adds the connection's TLS extension to each scope (pure ASGI, one instance per connection)."""

    def __init__(self, app: ASGIApp, ext: dict[str, Any]) -> None:
        self.app, self.ext = app, ext

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            scope["extensions"] = {**(scope.get("extensions") or {}), "tls": self.ext}
        await self.app(scope, receive, send)


class TLSInfoProtocol(GuardedHTTPProtocol):
    """veil's HTTP protocol (veil.proxy.h1server), with the TLS extension in the scope (see the module
    docstring)."""

    app: Any  # set by uvicorn's protocol __init__ (config.loaded_app)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ext = tls_extension(transport)
        if ext is not None:
            self.app = _WithTLS(self.app, ext)
