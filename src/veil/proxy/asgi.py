"""ASGI plumbing for the proxy: the ASGI types (named once, used in every signature), the request body
(veil.proxy.reqbody), sending a whole response once, lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from veil.config import ClientLimits
from veil.proxy.reqbody import RequestBody, declared_length

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def request_body(scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]],
                 limits: ClientLimits | None = None) -> RequestBody | None:
    """The request body to forward (None without one): read under `limits`' deadlines, and never
    handed to the upstream as complete when it did not arrive whole (see veil.proxy.reqbody)."""
    if scope["method"] in ("GET", "HEAD"):
        return None
    if not any(n in (b"content-length", b"transfer-encoding") for n, _ in headers):
        return None
    return RequestBody(receive, limits or ClientLimits(), declared_length(headers))


class ResponseGuard:
    """`send`, remembering whether a response has started: once it has, a last-resort error handler
    must not start another one (the connection is closed instead, the response left incomplete)."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *,
                        head: bool = False) -> None:
    if status not in (204, 304):  # they never carry a body, nor a Content-Length (RFC 9110 8.6)
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
